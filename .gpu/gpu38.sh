# issue 20: plain `generate` (no CUDA graphs) at 32 layers after the per-signature plans (host path 90 -> 25 µs)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 275 python benchmarks/e2e.py --layers 32 --decode 64 --repeats 2 --variants bf16_eager,w4a16_generate \
  --out $OUT/e2e_generate32.json > $OUT/e2e_generate.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_generate.log | grep -v "^W12" | tail -8
