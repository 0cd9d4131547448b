# issue 18, batched decode: W4A8 at 4-32 rows on W4A16's split-K tensor-core tile (kernel "tc") vs the shipped tile;
# then (issue 20) the nibble-plane W4A16 prompt tile, short form
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/w4a8_tc_probe.py > $OUT/w4a8_tc_probe.log 2>&1; echo "probe rc $?"
grep -E "^N=|^layer|Error|error" $OUT/w4a8_tc_probe.log | cut -c1-250
MS=16,128 SHAPES=4096x4096,4096x14336 timeout 130 python .gpu/w4a16_planes_probe.py > $OUT/w4a16_planes_short.log 2>&1; echo "planes rc $?"
grep -v Warn $OUT/w4a16_planes_short.log | cut -c1-260
