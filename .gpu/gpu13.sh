# issue 20, lean: reduce-overhead decode + TTFT, bf16 vs qpass w4a16, after the static-input fix (8 layers)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 230 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 200 \
  --variants bf16_compile_ro,w4a16_ro --out $OUT/e2e_ro8d.json > $OUT/e2e_ro8d.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ro8d.log | grep -v "^W1206" | tail -8
grep -c "skipping cudagraphs" $OUT/e2e_ro8d.log
