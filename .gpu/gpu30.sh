# issue 18: 32-layer e2e decode b1 with the dp4a W4A8/W4A4 GEMV (w4a8_qsm, w4a4_qsm vs bf16+compile), 4K prefill
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 570 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm,w4a4_qsm \
  --budget-s 470 --out $OUT/e2e_32layers_b1_dp4a.json > $OUT/e2e_b1.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_b1.log | grep -v "^W1206" | tail -8
