# ternary prefill (issue-20 noticed item): the split-K tile with float-unpacked trits (M <= 64) and dequantize +
# cuBLAS (M >= 65) against bf16 and W4A16, same process; earlier tile: benchmarks/results/restructure_h200/after.json
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p $OUT/ternary
timeout 240 python benchmarks/gemm.py --ms 16,64,256,2048 --ops bf16,w4a16,ternary --out $OUT/ternary \
  > $OUT/ternary/gemm.log 2>&1; echo "gemm rc $?"
grep -E "^done|HBM" $OUT/ternary/gemm.log | cut -c1-200
