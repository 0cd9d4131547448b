# Issue 18 batched decode after the dispatch change (dp4a rows to 4, "tc" nibble planes with 64-wide groups to 16):
# kernel probe; then 8 layers at batch 8, bf16+compile + w4a8-qsm, on this tree and on a copy with db226f2's kernels.
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=$PWD timeout 130 python .gpu/w4a8_b8_probe.py 2>&1 | grep -v -i warn | tee $OUT/w4a8_b8_probe.log | tail -42
E2E="benchmarks/e2e.py --layers 8 --batch 8 --decode 32 --repeats 2 --profile 1 --variants bf16_compile,w4a8_qsm"
PYTHONPATH=$PWD timeout 170 python $E2E --out $OUT/e2e_8layers_b8_after.json > $OUT/e2e_after.log 2>&1; echo "after rc $?"
rm -rf /tmp/before && cp -r $PWD /tmp/before && cp -r .gpu/old_kernels/kernels/. /tmp/before/kernels/
(cd /tmp/before && PYTHONPATH=/tmp/before timeout 170 python $E2E --out $OUT/e2e_8layers_b8_before.json > $OUT/e2e_before.log 2>&1; echo "before rc $?")
for f in $OUT/e2e_after.log $OUT/e2e_before.log; do echo "== $f"; grep -v -i warn $f | grep -v "^W12" | grep -E "tok/s|FAILED|Error| \| " | tail -5; done
for f in $OUT/*.prof_*.txt; do echo "== $f"; head -12 $f | cut -c1-57,160-200; done
