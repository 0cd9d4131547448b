# issue 20, one lean call: host µs per op, then the GEMV probe (ternary gemv4 vs gemv2, non-persistent W4A16)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 50 python benchmarks/launch_overhead.py --json $OUT/launch.json > $OUT/launch.txt 2>&1; echo "launch rc $?"
grep -v Warn $OUT/launch.txt | tail -14
timeout 130 python .gpu/gemv_flat_probe.py > $OUT/gemv_flat.log 2>&1; echo "gemv rc $?"
grep -A40 "best per shape" $OUT/gemv_flat.log
