# issue 20, second call on the warm machine: where W4A16's host µs go, then TTFT/decode with reduce-overhead
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python benchmarks/launch_overhead.py --profile w4a16 > $OUT/profile_w4a16.txt 2>&1; echo "profile rc $?"
grep -v Warn $OUT/profile_w4a16.txt | head -45
timeout 400 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 330 \
  --variants bf16_compile,bf16_compile_ro,w4a16_ro --out $OUT/e2e_ro8b.json > $OUT/e2e_ro8b.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ro8b.log | tail -20
