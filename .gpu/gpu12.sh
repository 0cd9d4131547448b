# issue 20: decode + TTFT with inductor's CUDA graphs ("reduce-overhead") now that the StaticCache is allocated
# eagerly (its tensors are static addresses), beside our captured step, 8 layers
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 --budget-s 330 \
  --variants bf16_compile,bf16_compile_ro,w4a16_ro,w4a16 --out $OUT/e2e_ro8c.json > $OUT/e2e_ro8c.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ro8c.log | grep -v "^W1206" | tail -22
