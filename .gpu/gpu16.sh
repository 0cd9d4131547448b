# issue 18: integer group steps — the grouped W4A8 GEMM table, then 32-layer e2e bf16+compile vs w4a8-qsm
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python benchmarks/gemm.py --ms 1,16,64,256,1024,4096 --shapes 4096x4096,14336x4096,4096x14336 \
  --ops bf16,int8,w4a8_g64,w4a8_g64_int --out $OUT/gemm > $OUT/gemm.log 2>&1; echo "gemm rc $?"
grep "^|" $OUT/gemm/*.md | grep -i "g64\|bf16\|M |" | head -60
timeout 420 python benchmarks/e2e.py --layers 32 --decode 64 --repeats 1 --variants bf16_compile,w4a8_qsm \
  --budget-s 380 --out $OUT/e2e_w4a8_qsm.json > $OUT/e2e_w4a8_qsm.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_w4a8_qsm.log | grep -v "^W1206" | tail -6
