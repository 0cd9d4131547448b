# issue 18: the static quantizer by row count (small-M tile kernel, no step copies), then 32-layer e2e w4a8-qsm
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python .gpu/quant_small_m_probe.py > $OUT/quant_small_m_probe.log 2>&1; echo "probe rc $?"; cat $OUT/quant_small_m_probe.log | tail -17
timeout 420 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm --profile 2 \
  --budget-s 300 --out $OUT/e2e_32layers_w4a8.json > $OUT/e2e_32layers_w4a8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32layers_w4a8.log | grep -v "^W1206" | tail -4
