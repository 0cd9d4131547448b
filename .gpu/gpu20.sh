# issue 18: the CantSplit fix (static compiler path ignores dynamic marks), 4-layer repro, then 32-layer e2e
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/qsm_inductor_repro.py w4a8-qsm int 4 > $OUT/repro4.log 2>&1; echo "repro rc $?"; tail -4 $OUT/repro4.log
grep -q "compiled" $OUT/repro4.log || exit 1
timeout 420 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm,w4a4_qsm \
  --budget-s 300 --out $OUT/e2e_32layers_qsm.json > $OUT/e2e_32layers_qsm.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32layers_qsm.log | grep -v "^W1206" | tail -8
