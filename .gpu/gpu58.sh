# The last ≈ 340 s of device time: the plans on hardware after the persistent kernel's stride fix (the [1, M, K] x
# case included), then w4a8-qsm end to end at 8 layers against bf16+compile (decode, 4K prefill, a 512-token prompt).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; grep -E "FAILED|2100|all plan" $OUT/plan_check.log
timeout 175 python benchmarks/e2e.py --layers 8 --decode 16 --repeats 1 --ttft 512 \
  --variants bf16_compile,w4a8_qsm --out $OUT/e2e_8layers.json > $OUT/e2e.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e.log | grep -v "^W12" | tail -9
