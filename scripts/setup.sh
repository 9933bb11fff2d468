#!/usr/bin/env bash
# Set up everything lns_keras needs on a fresh machine: a virtualenv in .venv with the
# package and its dev extras, (where apt is available) Debian's Fashion-MNIST files, and
# the documentation site's JavaScript from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist \
    || echo "warning: could not install dataset-fashion-mnist; pass --data_dir to the apps"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"

# The documentation site ships its own MathJax (and the shim that lets search run from
# file://), so that `mkdocs build` gives a site that works with no internet. The versions
# are pinned in package-lock.json; the files are copied into docs/assets/vendor/
# (git-ignored), which mkdocs copies into the site. A copy made from the same lock file
# is kept, so a rerun offline changes nothing.
vendor=docs/assets/vendor
if [ -f "$vendor/mathjax/tex-mml-chtml.js" ] && cmp -s package-lock.json "$vendor/.package-lock.json"; then
  :
else
  if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq npm; } \
      || echo "warning: could not install npm"
  fi
  if command -v npm >/dev/null 2>&1 \
    && npm ci --prefer-offline --no-audit --no-fund --loglevel=error; then
    rm -rf "$vendor"
    mkdir -p "$vendor/iframe-worker"
    cp -r node_modules/mathjax/es5 "$vendor/mathjax"
    cp node_modules/mathjax/LICENSE "$vendor/mathjax/LICENSE"
    cp node_modules/iframe-worker/shim/index.js "$vendor/iframe-worker/shim.js"
    cp node_modules/iframe-worker/LICENSE "$vendor/iframe-worker/LICENSE"
    cp package-lock.json "$vendor/.package-lock.json"
  else
    echo "warning: could not install the documentation's JavaScript from the npm registry" \
      "(offline, or no npm); a site built now shows formulas as raw LaTeX." \
      "Rerun scripts/setup.sh with access to the npm registry." >&2
  fi
fi
