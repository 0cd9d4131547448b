# Issue 18 batched decode: W4A8 g64 at 2-16 rows (shipped: dp4a rows to 4, int8 tile to 16) against W4A16's tile on
# the nibble planes with 64-wide groups (on request), W4A16 g64 planes vs interleaved. Kernel timings only.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/w4a8_b8_probe.py 2>&1 | grep -v -i warn | tee $OUT/w4a8_b8_probe.log | tail -50
