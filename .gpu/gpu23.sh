# issue 18: 32-layer e2e at decode batch 8 (prefill batch 1), bf16+compile vs w4a8-qsm / w4a4-qsm
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 500 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --batch 8 --variants bf16_compile,w4a8_qsm,w4a4_qsm \
  --budget-s 330 --out $OUT/e2e_32layers_b8.json > $OUT/e2e_32layers_b8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32layers_b8.log | grep -v "^W1206" | tail -5
