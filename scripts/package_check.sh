#!/usr/bin/env bash
# Packaging as users meet it: build the wheel and the sdist, install each into a fresh virtual
# environment (dependencies taken from the project's .venv, so nothing is downloaded), then import
# pixnet from there and run a tiny fit + predict + evaluate. A minute or two. Usage:
#   bash scripts/package_check.sh            (uses .venv/bin/python; PYTHON=... to choose)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"
"$py" -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/pixnet-*.whl)"
sdist="$(ls "$work"/dist/pixnet-*.tar.gz)"
for artefact in "$wheel" "$sdist"; do
  env="$work/venv-$(basename "$artefact" | tr -c 'a-z0-9\n' _)"
  "$py" -m venv --system-site-packages "$env"
  # the dependencies: those of the project's environment, seen after the new environment's own
  deps="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$deps" > "$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_pixnet_deps.pth"
  "$env/bin/python" -m pip install -q --no-deps --no-build-isolation "$artefact"
  (cd "$work" && PYTHONPATH= MPLBACKEND=Agg "$env/bin/python" - "$artefact" <<'PY'
import sys
from pathlib import Path

import pixnet

here = Path(pixnet.__file__).resolve()
assert "site-packages" in str(here) and "/src/" not in str(here), f"imported {here}, not the installed package"
slide = pixnet.datasets.visium_hd_demo(Path("slide"), size_um=160, seed=1)
sdata = pixnet.io.visium_hd(slide)
model = pixnet.tl.fit(sdata, bin_size=16, n_genes=6, epochs=1, tiles_per_epoch=2, batch_size=2, progress=False)
pixnet.tl.predict(sdata, bin_size=8, progress=False)
scores = pixnet.tl.evaluate(sdata, bin_size=8)
assert "pixnet_square_008um" in sdata.tables and scores["n_bins"] > 0
print(f"{Path(sys.argv[1]).name}: installed at {here.parent}, demo PCC@M {scores['PCC@M']:.3f}")
PY
  )
  "$env/bin/pixnet" --help >/dev/null
done
echo "package check passed: $(basename "$wheel"), $(basename "$sdist")"
