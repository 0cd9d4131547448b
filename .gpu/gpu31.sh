# issue 20: W4A16 prompt tiles with the codes unpacked straight to bf16 (no I2F) vs through int32, same process
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python benchmarks/w4a16_prompt_sweep.py --ms 16,64,128,256,512 --tiles short \
  --out $OUT/w4a16_prompt_float_unpack.json > $OUT/sweep.log 2>&1; echo "sweep rc $?"
grep -E "^M=|failed" $OUT/sweep.log | cut -c1-230
