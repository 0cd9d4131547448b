# issue 20: TTFT / decode with inductor's CUDA graphs ("reduce-overhead") beside the default compile, 8 layers
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 330 \
  --variants bf16_compile,bf16_compile_ro,w4a16,w4a16_ro --out $OUT/e2e_ro8.json > $OUT/e2e_ro8.log 2>&1; echo "e2e rc $?"
grep -v Warning $OUT/e2e_ro8.log | tail -14
