# Issue 18's prefill and decode lines at 32 layers with the new int8 GEMM dispatch (persistent TMA kernel from 2,048
# rows): bf16+compile, w4a8-qsm and (if the time allows) w4a4-qsm in one process; JSON written after each variant.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 585 python benchmarks/e2e.py --layers 32 --decode 64 --repeats 2 --ttft 512 --budget-s 300 \
  --variants bf16_compile,w4a8_qsm,w4a4_qsm --out $OUT/e2e_32layers.json > $OUT/e2e_32.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32.log | grep -v "^W12" | grep -E "tok/s|FAILED|sites|variant| \| " | tail -14
