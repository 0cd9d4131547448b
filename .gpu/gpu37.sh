# (was gpu32) issue 20: time to first token (8 layers, inductor CUDA graphs) after the W4A16 prompt dispatch change
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 \
  --variants bf16_compile_ro,w4a16_ro --budget-s 300 --out $OUT/e2e_ttft_ro8.json > $OUT/e2e_ttft.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W1206" | tail -8
