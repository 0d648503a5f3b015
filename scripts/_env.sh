# Sourced by scripts/demo.sh and scripts/test.sh: creates .venv on first use and
# (re)installs pixnet with its test and doc extras whenever pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
[ -n "$py" ] || { echo "pixnet: Python >= 3.11 is needed (set PYTHON=/path/to/python)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "pixnet: creating .venv with $($py --version)" >&2
  "$py" -m venv .venv
fi
stamp=".venv/.pixnet-installed"
want="$(sha256sum pyproject.toml | cut -c1-64)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "pixnet: installing the package and its dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,doc]"
  echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
export MPLBACKEND="${MPLBACKEND:-Agg}"
