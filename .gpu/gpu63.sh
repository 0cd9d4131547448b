# Issue 18 at 32 layers after the gate/up order fold and the attention layout change: 4K prefill (batch 1) and
# CUDA-graph decode at batch 8, bf16+compile, w4a8-qsm, w4a4-qsm in one process; JSON written after each variant.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 490 python benchmarks/e2e.py --layers 32 --batch 8 --decode 32 --repeats 3 --budget-s 270 --profile 1 \
  --variants bf16_compile,w4a8_qsm,w4a4_qsm --out $OUT/e2e_32layers_b8.json > $OUT/e2e_32.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32.log | grep -v "^W12" | grep -E "tok/s|FAILED|sites|variant| \| |summed" | tail -14
for f in $OUT/*.prof_*.txt; do echo "== $f"; head -14 $f | cut -c1-57,160-200; done
