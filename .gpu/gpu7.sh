export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 280 python benchmarks/gemm.py --ms 16,4096 --ops bf16,w4a16,int_mm,int8,w4a8,w4a8_g64 --out $OUT/gemm 2>&1 | grep -v Warning | grep -v "^done" | tail -45
