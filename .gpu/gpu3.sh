export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
T0=$(date +%s)
timeout 170 python benchmarks/lowered_vs_fake.py --presets w4a4-qsm,w4a8-qsm,w8a8-smooth-g64,w4a8 --dtypes float32,bfloat16 --out $OUT/lowered_vs_fake.json 2>&1 | grep -v Warning | tail -14
echo "elapsed $(( $(date +%s) - T0 ))"
timeout 300 python benchmarks/sale_window.py --out $OUT/sale_window.json 2>&1 | grep -v Warning | tail -40
echo "elapsed $(( $(date +%s) - T0 ))"
