#!/usr/bin/env bash
# Install Detectron2 0.6 into the venv from the PyPI re-upload `pb1-detectron2` (see STACK.md):
# the sdist has no C++ sources, so it is built as a pure-Python wheel (no `_C` extension;
# transfer/detectron2/compat.py supplies a placeholder) with the model-zoo YAMLs packaged.
set -euo pipefail
PY=${1:-.venv/bin/python}
if "$PY" -c "import detectron2, sys; sys.exit(0)" 2>/dev/null; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$work" pb1-detectron2==0.6
tar -xzf "$work"/pb1*detectron2-0.6.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name '*detectron2-0.6' | head -n 1)
# No C++ sources in the sdist: build without the extension.
sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
# setup.py packages the model-zoo configs from a top-level configs/ folder.
[ -d "$src/configs" ] || cp -r "$src/detectron2/model_zoo/configs" "$src/configs"
"$PY" -m pip install --quiet --no-build-isolation "$src"
