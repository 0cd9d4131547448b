# issue 18: the static quantizer (three forms), then e2e at 2 layers with the row-gather quantizer
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python .gpu/quant_static_probe.py > $OUT/quant_static_probe.log 2>&1; echo "probe rc $?"; tail -6 $OUT/quant_static_probe.log
timeout 200 python benchmarks/e2e.py --layers 2 --decode 64 --repeats 2 --variants bf16_compile,w4a8_qsm,w4a4_qsm \
  --budget-s 180 --out $OUT/e2e_qsm_2layers_c.json > $OUT/e2e_qsm_2layers_c.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_qsm_2layers_c.log | grep -v "^W1206" | tail -4
