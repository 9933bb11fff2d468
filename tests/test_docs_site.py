"""The documentation site works with no internet.

`mkdocs build` must give a site whose pages load nothing from another host: MathJax and
the offline-search shim are installed from the npm registry by scripts/setup.sh (pinned in
package-lock.json) into docs/assets/vendor/, and the theme uses system fonts. A page that
loaded MathJax from a CDN would show every formula as raw LaTeX on a machine without
internet.
"""

import html.parser
import os
import pathlib
import posixpath
import re
import subprocess
import sys
import urllib.parse

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
VENDORED_MATHJAX = REPO / "docs" / "assets" / "vendor" / "mathjax" / "tex-mml-chtml.js"

# http://host, https://host, or protocol-relative //host (data: URLs are local).
_EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
# <link rel=...> values that only name another page; every other rel loads something.
_NAVIGATION_RELS = {"alternate", "canonical", "next", "prev", "author", "license"}
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""")


class _LoadedResources(html.parser.HTMLParser):
    """Collects (kind, url) of what a page loads: scripts, stylesheets, images, frames."""

    def __init__(self):
        super().__init__()
        self.loaded = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.loaded.append(("script", attrs["src"]))
        elif tag == "link" and attrs.get("href"):
            rels = set((attrs.get("rel") or "").lower().split())
            if not rels <= _NAVIGATION_RELS:
                kind = "stylesheet" if "stylesheet" in rels else "link " + " ".join(sorted(rels))
                self.loaded.append((kind, attrs["href"]))
        elif tag in ("img", "iframe", "audio", "video", "source", "embed") and attrs.get("src"):
            self.loaded.append((tag, attrs["src"]))


def loaded_resources(page: pathlib.Path) -> list[tuple[str, str]]:
    parser = _LoadedResources()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.loaded


def resolve(site: pathlib.Path, page: pathlib.Path, url: str) -> pathlib.Path:
    """The file in `site` that a local `url` on `page` points at."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    if path.startswith("/"):
        return site / path.lstrip("/")
    relative = page.parent.relative_to(site).as_posix()
    return site / posixpath.normpath(posixpath.join(relative, path))


def external_loads(site: pathlib.Path) -> list[str]:
    """Every script, stylesheet, image or CSS url() in `site` that comes from another host."""
    found = []
    for page in sorted(site.rglob("*.html")):
        for kind, url in loaded_resources(page):
            if _EXTERNAL.match(url):
                found.append(f"{page.relative_to(site)}: {kind} {url}")
    for sheet in sorted(site.rglob("*.css")):
        for match in _CSS_URL.finditer(sheet.read_text(encoding="utf-8")):
            url = match.group(1) or match.group(2)
            if _EXTERNAL.match(url):
                found.append(f"{sheet.relative_to(site)}: css {url}")
    return found


def missing_loads(site: pathlib.Path) -> list[str]:
    """Every local script or stylesheet a page loads that the site does not contain."""
    missing = []
    for page in sorted(site.rglob("*.html")):
        for kind, url in loaded_resources(page):
            if kind in ("script", "stylesheet") and not _EXTERNAL.match(url):
                if not resolve(site, page, url).is_file():
                    missing.append(f"{page.relative_to(site)}: {kind} {url}")
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    assert VENDORED_MATHJAX.is_file(), (
        f"{VENDORED_MATHJAX.relative_to(REPO)} is missing: run scripts/setup.sh, which "
        "installs the documentation's JavaScript from the npm registry"
    )
    site_dir = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site_dir)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return site_dir


def test_no_page_loads_anything_from_another_host(site):
    assert list(site.rglob("*.html")), "the build wrote no page"
    assert external_loads(site) == []


def test_every_script_and_stylesheet_a_page_loads_is_in_the_site(site):
    assert missing_loads(site) == []


def test_concepts_page_typesets_its_math_with_the_shipped_mathjax(site):
    page = site / "concepts.html"
    text = page.read_text(encoding="utf-8")
    assert 'class="arithmatex"' in text, "no formula reached the page for MathJax"
    scripts = [url for kind, url in loaded_resources(page) if kind == "script"]
    mathjax = [url for url in scripts if url.endswith("tex-mml-chtml.js")]
    config = [url for url in scripts if url.endswith("javascripts/mathjax.js")]
    assert mathjax and config, scripts
    # MathJax reads window.MathJax when it loads, so its configuration must come first.
    assert scripts.index(config[0]) < scripts.index(mathjax[0])
    mathjax_dir = resolve(site, page, mathjax[0]).parent
    # CHTML output loads its fonts, and the TeX input its extensions, relative to itself.
    assert (mathjax_dir / "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()
    assert (mathjax_dir / "input/tex/extensions/ams.js").is_file()


def test_checks_catch_a_cdn_script_and_a_missing_file(tmp_path):
    page = tmp_path / "guide" / "page.html"
    page.parent.mkdir()
    (tmp_path / "present.js").write_text("")
    page.write_text(
        '<link rel="stylesheet" href="//fonts.example/css">'
        '<link rel="next" href="https://example.org/next.html">'
        '<script src="https://cdn.example/mathjax.js"></script>'
        '<script src="../present.js"></script><script src="../absent.js"></script>'
    )
    (tmp_path / "main.css").write_text("a{background:url('data:x')} @import 'http://x/y.css';")
    assert external_loads(tmp_path) == [
        "guide/page.html: stylesheet //fonts.example/css",
        "guide/page.html: script https://cdn.example/mathjax.js",
        "main.css: css http://x/y.css",
    ]
    assert missing_loads(tmp_path) == ["guide/page.html: script ../absent.js"]
