# Issue 18 at 32 layers, batch 8, after .gpu/gpu67.sh has settled the 5-16-row dispatch: kernel probe, then
# bf16+compile, w4a8-qsm, w4a4-qsm if the budget allows; one process.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/w4a8_b8_probe.py 2>&1 | grep -v -i warn | tee $OUT/w4a8_b8_probe.log | tail -48
timeout 420 python benchmarks/e2e.py --layers 32 --batch 8 --decode 32 --repeats 3 --budget-s 300 --profile 1 \
  --variants bf16_compile,w4a8_qsm,w4a4_qsm --out $OUT/e2e_32layers_b8.json > $OUT/e2e_32.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32.log | grep -v "^W12" | grep -E "tok/s|FAILED|sites|variant| \| |summed" | tail -14
for f in $OUT/*.prof_*.txt; do echo "== $f"; head -14 $f | cut -c1-57,160-200; done
