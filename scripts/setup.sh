#!/usr/bin/env bash
# Set up everything lns_keras needs on a fresh machine: a virtualenv in .venv with the
# package and its dev extras (TensorFlow, JAX and PyTorch on the CPU), the larq test
# oracle's own virtualenv in .venv-larq, (where apt is available) Debian's Fashion-MNIST
# files, and the documentation site's JavaScript from the npm registry.
#
# `bash scripts/setup.sh larq-oracle` (re)builds only .venv-larq.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test oracle, larq 0.14, needs numpy<2 and tf.keras 2; the main environment has
# numpy 2, which JAX needs. So larq gets a small environment of its own, which the tests
# run in a subprocess (tests/larq_oracle.py). It takes the main environment's TensorFlow
# release, so that the files one side saves the other reads as they were written. It also
# holds larq-compute-engine, whose interpreter reads no input under numpy 2: the tests run
# the 1-bit .tflite files there (tests/lce_interpreter.py).
setup_larq_oracle() {
  local tf_version
  tf_version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('tensorflow'))")
  if [ ! -x .venv-larq/bin/python ]; then
    python3 -m venv .venv-larq
  fi
  .venv-larq/bin/python -m pip install -q --upgrade pip
  .venv-larq/bin/python -m pip install -q "larq==0.14.0" "numpy<2" "tensorflow==$tf_version" tf-keras \
    larq-compute-engine
}

case "${1:-}" in
  "") ;;
  larq-oracle)
    setup_larq_oracle
    exit 0
    ;;
  *)
    echo "usage: bash scripts/setup.sh [larq-oracle]; got argument ${1@Q}" >&2
    exit 2
    ;;
esac

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
setup_larq_oracle

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
