# issues 18/20: the batched-decode GEMV probe, then the 32-layer b1 e2e with the fused static quantizer
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/gemv_rows_probe.py > $OUT/gemv_rows_probe.log 2>&1; echo "probe rc $?"
grep -E "^M=|Error" $OUT/gemv_rows_probe.log | head -40
timeout 330 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm \
  --out $OUT/e2e_32layers_w4a8_qsm_fused.json > $OUT/e2e_w4a8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_w4a8.log | grep -v "^W1206" | tail -4
