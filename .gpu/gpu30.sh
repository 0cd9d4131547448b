# issues 18/20: the batched-decode GEMV probe, then the 32-layer e2e at batch 8 (the fused static quantizer and
# prefix guard) with its batch-1 4K prefill
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/gemv_rows_probe.py > $OUT/gemv_rows_probe.log 2>&1; echo "probe rc $?"
grep -E "^M=|Error" $OUT/gemv_rows_probe.log | head -40
timeout 400 python benchmarks/e2e.py --layers 32 --decode 64 --repeats 2 --batch 8 --variants bf16_compile,w4a8_qsm,w4a16 --budget-s 300 \
  --out $OUT/e2e_32layers_b8.json > $OUT/e2e_b8.log 2>&1; echo "e2e rc $?"
grep -E "tok/s decode|FAILED|lowered" $OUT/e2e_b8.log | tail -8
