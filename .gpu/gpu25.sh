# issue 18: the static quantizer fused by inductor: GPU correctness (2 layers), then 32-layer e2e b1 w4a8-qsm
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/fused_quant_check.py > $OUT/fused_quant_check.log 2>&1; echo "check rc $?"
grep -v -i warn $OUT/fused_quant_check.log | tail -4
timeout 420 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm \
  --profile 2 --budget-s 300 --out $OUT/e2e_32layers_w4a8_qsm_fused.json > $OUT/e2e_w4a8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_w4a8.log | grep -v "^W1206" | tail -6
