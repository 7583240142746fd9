#!/usr/bin/env bash
# Fill benchmarks/device/wheels/ (git-ignored) with what a GPU machine that already has torch, numpy,
# scipy, scikit-learn, typer, rich, safetensors, onnxruntime, httpx, jinja2, matplotlib and pytest
# lacks, so that run.sh installs them there without a network:
#   modelproof itself (a pure-python wheel built from this checkout),
#   kornia (+ kornia_rs), captum (+ tqdm), torch-pruning, cryptography (+ cffi, pycparser),
#   fastapi and uvicorn (+ starlette, pydantic, pydantic_core, annotated-types, annotated-doc,
#   typing-inspection, typing_extensions, anyio, idna, sniffio, opentelemetry-api,
#   importlib-metadata, zipp, click, h11). Not onnx/onnxscript (32 MB; the benchmarks export nothing).
# Versions are the ones this checkout's .venv runs (tested); binary wheels are fetched for every
# CPython in PYTHONS (default 3.12, the lent GPU machines' Python), manylinux x86_64: about 7 MB per version plus
# 8 MB shared. Name the GPU machine's Python alone to keep the run small (the run tool carries 64 MiB).
#
# Usage (here, with a network or the local package index):
#   benchmarks/device/fetch_wheels.sh            # then carry benchmarks/device/wheels with the run
#   PYTHONS="3.12" benchmarks/device/fetch_wheels.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${DEST:-$ROOT/benchmarks/device/wheels}
PIP=${PIP:-$ROOT/.venv/bin/pip}
PYTHONS=${PYTHONS:-"3.12"}
PACKAGES="kornia kornia_rs captum tqdm torch-pruning cryptography cffi pycparser fastapi starlette pydantic
pydantic_core annotated-types annotated-doc typing-inspection typing_extensions anyio idna sniffio
opentelemetry-api importlib-metadata zipp uvicorn click h11"

rm -rf "$DEST" && mkdir -p "$DEST"
# pin each package to the version installed here (the versions the test suite ran with); one this
# environment does not have is not needed by it either
pins=()
for name in $PACKAGES; do
  version=$("$PIP" show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ -n "$version" ]; then pins+=("$name==$version"); else echo "skipping $name (not installed here)"; fi
done
for py in $PYTHONS; do
  "$PIP" download --quiet --no-deps --only-binary=:all: --dest "$DEST" --implementation cp \
    --python-version "$py" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform any "${pins[@]}"
done
rm -f "$DEST"/modelproof-*.whl
"$PIP" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$DEST" "$ROOT"
du -sh "$DEST"
ls "$DEST"
