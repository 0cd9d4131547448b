export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
T0=$(date +%s)
timeout 250 python benchmarks/w4a16_prompt_sweep.py --out $OUT/w4a16_prompt2.json 2>&1 | grep -v Warning
echo "elapsed $(( $(date +%s) - T0 ))"
timeout 280 python benchmarks/sale_window.py --out $OUT/sale_window.json 2>&1 | grep -v Warning | tail -45
echo "elapsed $(( $(date +%s) - T0 ))"
