# issue 20: non-persistent GEMV probe + TTFT / decode with inductor's CUDA graphs ("reduce-overhead"), 8 layers
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/gemv_flat_probe.py > $OUT/gemv_flat.log 2>&1; echo "gemv rc $?"
grep -A20 "best per shape" $OUT/gemv_flat.log
timeout 360 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 300 \
  --variants bf16_compile,bf16_compile_ro,w4a16,w4a16_ro --out $OUT/e2e_ro8.json > $OUT/e2e_ro8.log 2>&1; echo "e2e rc $?"
grep -v Warning $OUT/e2e_ro8.log | tail -14
