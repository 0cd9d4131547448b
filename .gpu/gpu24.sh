# issue 18: 32-layer e2e at batch 1, bf16+compile vs w4a4-qsm after the quantizer changes
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 400 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a4_qsm \
  --budget-s 200 --out $OUT/e2e_32layers_w4a4_b1.json > $OUT/e2e_32layers_w4a4_b1.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32layers_w4a4_b1.log | grep -v "^W1206" | tail -5
