set -x
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name --format=csv,noheader
T0=$(date +%s)
timeout 150 python benchmarks/lowered_vs_fake.py --presets w4a4-qsm,w4a8-qsm,w8a8-smooth-g64,w4a8 --dtypes float32,bfloat16 --out $OUT/lowered_vs_fake.json 2>&1 | grep -v Warning | tail -12
timeout 200 python benchmarks/gemm.py --ms 1,16,4096 --ops bf16,tinygemm,w4a16,int_mm,int8,w4a8,w4a8_g64,int8_g64,qact,qact_static --out $OUT/gemm 2>&1 | tail -60
echo "elapsed $(( $(date +%s) - T0 ))"
