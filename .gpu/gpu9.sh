# issue 20, smallest call: shipped W4A16 op vs tinygemm and ternary gemv4 vs gemv2 at M = 1 (Llama-3-8B shapes)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python .gpu/gemv_flat_probe.py --quick > $OUT/gemv_quick.log 2>&1; echo "gemv rc $?"
grep -v Warn $OUT/gemv_quick.log | grep -A30 "best per shape"
