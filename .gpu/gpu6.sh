export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 560 python benchmarks/e2e.py --layers 32 --decode 64 --repeats 2 --ttft 128,512,2048 --variants bf16_compile,w4a16 --out $OUT/e2e_ttft.json 2>&1 | grep -v Warning | tail -30
