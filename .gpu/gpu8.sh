# issue 20, one call: host µs per op, GEMV probe (non-persistent W4A16 variants, ternary gemv4 vs gemv2), and
# end to end at 8 layers: plain generate vs bf16 eager, TTFT / decode with "reduce-overhead" beside the default compile
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python benchmarks/launch_overhead.py --json $OUT/launch.json > $OUT/launch.txt 2>&1; echo "launch rc $?"
grep -v Warn $OUT/launch.txt | tail -14
timeout 140 python .gpu/gemv_flat_probe.py > $OUT/gemv_flat.log 2>&1; echo "gemv rc $?"
grep -A40 "best per shape" $OUT/gemv_flat.log
timeout 270 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 170 \
  --variants bf16_eager,w4a16_generate,bf16_compile,w4a16_ro,w4a16,bf16_compile_ro --out $OUT/e2e_ro8.json > $OUT/e2e_ro8.log 2>&1; echo "e2e rc $?"
grep -v Warning $OUT/e2e_ro8.log | tail -16
