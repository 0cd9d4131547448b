# issue 18: static quantizer grid order (before/after), then e2e at 2 layers again
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python .gpu/quant_static_probe.py > $OUT/quant_static_probe.log 2>&1; echo "probe rc $?"; tail -6 $OUT/quant_static_probe.log
timeout 300 python benchmarks/e2e.py --layers 2 --decode 64 --repeats 2 --variants bf16_compile,w4a8_qsm,w4a4_qsm \
  --budget-s 280 --out $OUT/e2e_qsm_2layers_b.json > $OUT/e2e_qsm_2layers_b.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_qsm_2layers_b.log | grep -v "^W1206" | tail -4
