# issue 18, decode batch 8: the multi-row dp4a W4A8 GEMV candidate against the shipped grouped tile and bf16 at
# 4 / 8 / 16 rows, Llama-3-8B shapes, asymmetric and signed g64 weights (correctness checked per config first)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 230 python .gpu/w4a8_rows_probe.py --quick > $OUT/w4a8_rows.log 2>&1; echo "probe rc $?"
grep -E "^N=|Error|error" $OUT/w4a8_rows.log | cut -c1-260
