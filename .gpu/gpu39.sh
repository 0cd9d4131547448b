# issue 18, batched decode: W4A8 at 4-32 rows on W4A16's split-K tensor-core tile (kernel "tc") vs the shipped tile
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/w4a8_tc_probe.py > $OUT/w4a8_tc_probe.log 2>&1; echo "probe rc $?"
grep -E "^N=|^layer|Error|error" $OUT/w4a8_tc_probe.log | cut -c1-250
