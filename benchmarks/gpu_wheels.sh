#!/usr/bin/env bash
# Wheels for benchmarks/gpu.sh: the packages pixnet's fit/predict path imports that the device
# image (Python 3.12, torch, timm, lightning, numpy, scipy, scikit-image...) lacks, at the versions
# of this checkout's .venv (made by scripts/test.sh). Run here, then hand .whl/ to the device run:
#   bash benchmarks/gpu_wheels.sh && device run: `bash benchmarks/gpu.sh` with carry [".whl"]
# The list was found by running fit, predict, evaluate and a zarr round trip with every other
# distribution blocked from import (40 MB of wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES="anndata annsel dask dask-image donfig fast-array-utils geopandas google-crc32c multiscale-spatial-image
natsort numcodecs ome-zarr pims slicerator spatial-image spatialdata spatialdata-io scanpy legacy-api-wrap shapely
xarray-dataclass zarr universal-pathlib pathlib-abc pooch platformdirs pyproj scverse-misc lazy-importer deprecated
more-itertools wcwidth importlib-metadata pytz pandas xarray"
mkdir -p .whl
for name in $NAMES; do
  spec="$name==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec" 2>/dev/null || .venv/bin/python -m pip wheel -q --no-deps -w .whl "$spec"  # sdist only (pims)
done
du -sh .whl
