# issue 18: split-K probe for the grouped W4A8 kernel, then the fused-quantizer check and 32-layer e2e b1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/w4a8_split_k_probe.py > $OUT/w4a8_split_k_probe.log 2>&1; echo "probe rc $?"
timeout 120 python .gpu/fused_quant_check.py > $OUT/fused_quant_check.log 2>&1; echo "check rc $?"
grep -v -i warn $OUT/fused_quant_check.log | tail -3
timeout 240 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm \
  --budget-s 200 --out $OUT/e2e_32layers_w4a8_qsm_fused.json > $OUT/e2e_w4a8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_w4a8.log | grep -v "^W1206" | tail -4
grep -o "N=.*M=.*bf16 *[0-9.]* default *[0-9.]*\|best.*" $OUT/w4a8_split_k_probe.log | paste - - | tail -16
