# after the H100 probe's dispatch changes: W4A16 PLANES at <= 16 rows (check + time), W4A8 17-32 rows on "tc",
# then the 32-layer batch-8 decode end to end (issue 20 line: w4a16 >= 2.0x bf16+compile)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 90 python .gpu/w4a16_planes_check.py > $OUT/w4a16_planes_check.log 2>&1; echo "check rc $?"
grep -E "^layer|Error|error|assert" $OUT/w4a16_planes_check.log | cut -c1-200
timeout 60 python .gpu/w4a8_tc_probe.py > $OUT/w4a8_tc_probe.log 2>&1; echo "w4a8 rc $?"
grep -E "^layer|Error|error" $OUT/w4a8_tc_probe.log | cut -c1-200
timeout 380 python benchmarks/e2e.py --layers 32 --batch 8 --decode 64 --repeats 2 --variants bf16_compile,w4a16 --out $OUT/e2e_b8_w4a16.json > $OUT/e2e_b8.log 2>&1; echo "e2e rc $?"
tail -25 $OUT/e2e_b8.log | cut -c1-200
