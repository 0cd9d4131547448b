# issue 20 (short): bf16 W4A16 tile, float unpack vs int unpack (each output checked against the reference), two shapes
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python benchmarks/w4a16_prompt_sweep.py --ms 16,64,128,256 --shapes 4096x4096,4096x14336 --tiles short \
  --out $OUT/w4a16_prompt_float_unpack_short.json > $OUT/sweep.log 2>&1; echo "sweep rc $?"
grep -E "^M=|failed" $OUT/sweep.log | cut -c1-230
