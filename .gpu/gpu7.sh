export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 170 python benchmarks/gemm.py --ms 16,4096 --shapes 14336x4096 --ops bf16,int_mm,int8,w4a8,w4a8_g64 --out $OUT/gemm 2>&1 | grep -v Warning | grep -v "^done" | tail -25
