export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a4_qsm --profile 2 \
  --budget-s 300 --out $OUT/e2e_32layers_w4a4.json > $OUT/e2e_32layers_w4a4.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32layers_w4a4.log | grep -v "^W1206" | tail -8
