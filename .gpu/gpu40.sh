# issue 18: 32-layer decode b1 of w4a4-qsm with the dp4a GEMV (gpu30's call ran out of time before its w4a4 row)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 560 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a4_qsm \
  --out $OUT/e2e_32layers_b1_w4a4_dp4a.json > $OUT/e2e_b1_w4a4.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_b1_w4a4.log | grep -v "^W12" | tail -8
