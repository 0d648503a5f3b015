#!/usr/bin/env bash
# The GPU checks, as one script for a lent device machine (the `device` tool), run from the repo root:
#   bash benchmarks/gpu.sh              # writes its records and logs to $OUT (default benchmarks/results/gpu)
# 1. the GPU test (tests/test_gpu.py); 2. predict time over the bare encoder's (benchmarks/predict.py): the
# one-pass predict with its defaults against the map-then-aggregate path in the same process (--compare), then
# X only without the map, then the output pipeline alone (--trivial: a network that does nothing);
# 3. the paper's settings for 500 epochs on the accuracy pair, 4. pixnet.tl.fit's defaults on it
# (benchmarks/accuracy.py); 5. Lightning's training throughput against a plain torch loop
# (benchmarks/throughput.py). Each step has a time limit and all of them a deadline (DEADLINE
# seconds after the start), so one that overruns leaves the others' results. The accuracy pair is
# made in the background meanwhile. Sizes and limits: the variables below.
# The device image has torch, timm and lightning but not the spatialdata stack: wheels of the
# missing packages (Python 3.12), put in .whl/ beforehand by benchmarks/gpu_wheels.sh, are installed
# to /tmp/site; the device run carries .whl.
set -uo pipefail
OUT="${OUT:-benchmarks/results/gpu}"
PREDICT_SIZE="${PREDICT_SIZE:-1500}" ACC_SIZE="${ACC_SIZE:-1000}" PAPER_EPOCHS="${PAPER_EPOCHS:-500}"
T_TEST="${T_TEST:-90}" T_PREDICT="${T_PREDICT:-150}" T_PREDICT_X="${T_PREDICT_X:-60}" T_PAPER="${T_PAPER:-480}" T_FIT="${T_FIT:-150}" T_THROUGHPUT="${T_THROUGHPUT:-60}"
DEADLINE="${DEADLINE:-570}"
mkdir -p "$OUT"
log="$OUT/log.txt"
if [ -d .whl ] && [ "${WHEELS:-1}" = 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py="${PYTHON:-python3}"
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit (and the deadline), log its output and wall time
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  ((limit > DEADLINE - SECONDS)) && limit=$((DEADLINE - SECONDS))
  ((limit < 10)) && { echo "=== $name: skipped, deadline" | tee -a "$log"; return; }
  echo "=== $name (limit ${limit}s) $(date -u +%FT%TZ)" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep -v -i "warning" | tee -a "$log"
  echo "=== $name: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s" | tee -a "$log"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import torch, timm, lightning; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$log"
(cd benchmarks && "$py" -c "from accuracy import make_pair; make_pair($ACC_SIZE)" >"$OUT/pair.txt" 2>&1) &
step gpu_test "$T_TEST" "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
step predict "$T_PREDICT" "$py" benchmarks/predict.py --size "$PREDICT_SIZE" --compare
step predict_x_only "$T_PREDICT_X" "$py" benchmarks/predict.py --size "$PREDICT_SIZE" --layers '' --map false
step predict_pipeline "$T_PREDICT_X" "$py" benchmarks/predict.py --size "$PREDICT_SIZE" --layers '' --map false --trivial --compare
wait  # the pair
step paper_500 "$T_PAPER" "$py" benchmarks/accuracy.py --size "$ACC_SIZE" --methods paper --epochs "$PAPER_EPOCHS" --out "$OUT/accuracy.jsonl"
step fit_defaults "$T_FIT" "$py" benchmarks/accuracy.py --size "$ACC_SIZE" --methods pixnet --tag gpu_defaults --out "$OUT/accuracy.jsonl"
step throughput "$T_THROUGHPUT" "$py" benchmarks/throughput.py
[ -f benchmarks/results/predict.jsonl ] && tail -n 3 benchmarks/results/predict.jsonl >"$OUT/predict.jsonl"
[ -f benchmarks/results/throughput.jsonl ] && tail -n 1 benchmarks/results/throughput.jsonl >"$OUT/throughput.jsonl"
exit 0
