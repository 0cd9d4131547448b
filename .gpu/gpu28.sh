# issue 18: 32-layer e2e b1 with the fused static quantizer and the long-K split, then the fused-vs-kernel check
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 390 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm \
  --out $OUT/e2e_32layers_w4a8_qsm_fused.json > $OUT/e2e_w4a8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_w4a8.log | grep -v "^W1206" | tail -4
TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 timeout 120 python .gpu/fused_quant_check.py w4a4_qsm > $OUT/fused_quant_check.log 2>&1; echo "check rc $?"
grep " vs " $OUT/fused_quant_check.log
