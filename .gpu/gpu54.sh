# The int8 GEMM's new dispatch (narrow N tiles at <= 16 rows, 64 x 128 to 256 rows, 128 x 128 above, the persistent
# TMA kernel from 2,048 rows): the plans on hardware, the GEMM table against bf16 / torch._int_mm, and end to end
# (8 layers) w4a8-qsm against bf16+compile: 4K prefill, time to first token, with a profile of the 512-token prompt.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 70 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; grep -E "FAILED|2100|all plan" $OUT/plan_check.log
timeout 170 python benchmarks/gemm.py --ms 1,128,512,2048,4096 --shapes 6144x4096,4096x4096,28672x4096,4096x14336 \
  --ops bf16,int_mm,int8,w4a8_g64_int --out $OUT/gemm > $OUT/gemm.log 2>&1; echo "gemm rc $?"
grep -E "^done" $OUT/gemm.log | cut -c1-160
timeout 300 python benchmarks/e2e.py --layers 8 --decode 16 --repeats 3 --ttft 128,512,2048 --profile 2 \
  --variants bf16_compile,w4a8_qsm --out $OUT/e2e_8layers_ttft.json > $OUT/e2e_ttft.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W12" | tail -9
for f in $OUT/*.prof_*.txt; do echo "== $f"; grep -A12 "by CPU time" $f | cut -c1-140; done
