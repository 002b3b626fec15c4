#!/usr/bin/env bash
# Usage: BASE=runs/lsm bash benchmarks/resume_check.sh
# Kill a real unet-cpu run mid-way (SIGKILL after step ~70, last checkpoint at 50), resume it, stop at ~120 steps,
# then compare its metrics row by row with the uninterrupted run.
set -u
cd "$(dirname "$0")/.."
D=${DATA:-../shared/data/lsm_selma3d_wu_patches/pretrain}
BASE=${BASE:?set BASE to the folder of an uninterrupted run of the same config (fmscope pretrain --config unet-cpu --data $D --out BASE)}
OUT=${OUT:-/tmp/fmscope_resume_check}
rm -rf $OUT
rows() { [ -f $OUT/metrics.csv ] && echo $(( $(wc -l < $OUT/metrics.csv) - 1 )) || echo 0; }
.venv/bin/fmscope pretrain --config unet-cpu --data $D --out $OUT > "$OUT.run1.log" 2>&1 &
PID=$!
while [ "$(rows)" -lt 70 ]; do sleep 2; done
kill -9 $PID; wait $PID 2>/dev/null
echo "killed after $(rows) logged steps; checkpoints: $(ls $OUT/checkpoints)"
.venv/bin/fmscope pretrain --config unet-cpu --data $D --out $OUT --resume > "$OUT.run2.log" 2>&1 &
PID=$!
while [ "$(rows)" -lt 121 ]; do sleep 2; done
kill -9 $PID; wait $PID 2>/dev/null
BASE=$BASE OUT=$OUT .venv/bin/python - <<'PY'
import os
import numpy as np
from pathlib import Path
from fmscope.engine.logs import read_metrics
a = read_metrics(Path(os.environ["BASE"]) / "metrics.csv")
b = read_metrics(Path(os.environ["OUT"]) / "metrics.csv")
n = min(len(a), len(b)) - 1
keys = ["loss", "distill", "recon", "align", "clip", "clip_scale", "lr", "grad_norm", "mask_fraction"]
A = np.array([[r[k] for k in keys] for r in a[:n]]); B = np.array([[r[k] for k in keys] for r in b[:n]])
print(f"compared steps 0..{n-1} (killed at ~70, resumed from the step-50 checkpoint)")
print("steps in order:", [int(r["step"]) for r in b[:n]] == list(range(n)))
print("max abs difference per term:", dict(zip(keys, np.abs(A - B).max(axis=0).round(9).tolist())))
print("identical:", bool(np.array_equal(A, B)))
PY
