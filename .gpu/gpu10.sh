# issue 20, one call: host µs per op, shipped GEMVs at M = 1, then TTFT/decode with reduce-overhead (8 layers)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 50 python benchmarks/launch_overhead.py --json $OUT/launch.json > $OUT/launch.txt 2>&1; echo "launch rc $?"
grep -v Warn $OUT/launch.txt | tail -14
timeout 100 python .gpu/gemv_flat_probe.py --quick > $OUT/gemv_quick.log 2>&1; echo "gemv rc $?"
grep -v Warn $OUT/gemv_quick.log | grep -A30 "best per shape"
timeout 330 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 280 \
  --variants bf16_eager,w4a16_generate,bf16_compile,w4a16,bf16_compile_ro,w4a16_ro --out $OUT/e2e_ro8.json > $OUT/e2e_ro8.log 2>&1; echo "e2e rc $?"
grep -v Warning $OUT/e2e_ro8.log | tail -24
