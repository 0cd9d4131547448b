# issue 20, one lean call: host µs per op, GEMV probe (ternary gemv4 vs gemv2, non-persistent W4A16 variants),
# then as much end to end (8 layers) as the budget leaves: TTFT with "reduce-overhead" vs the default compile
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 50 python benchmarks/launch_overhead.py --json $OUT/launch.json > $OUT/launch.txt 2>&1; echo "launch rc $?"
grep -v Warn $OUT/launch.txt | tail -14
timeout 130 python .gpu/gemv_flat_probe.py > $OUT/gemv_flat.log 2>&1; echo "gemv rc $?"
grep -A40 "best per shape" $OUT/gemv_flat.log
timeout 150 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,2048 --budget-s 60 \
  --variants w4a16_ro,bf16_compile,bf16_compile_ro --out $OUT/e2e_ro8.json > $OUT/e2e_ro8.log 2>&1; echo "e2e rc $?"
grep -v Warning $OUT/e2e_ro8.log | tail -12
