# Session start (2026-12-07, new session): the plans on hardware after the persistent kernel's stride fix, then
# w4a16 and w4a8-qsm against bf16+compile at 8 layers after the mask changes (a constant causal mask is is_causal at
# lowering; the runtime check remembered per storage): TTFT 128/512/2048 and profiles (decode, prompt, 4K prefill).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 45 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; grep -E "FAILED|2100|all plan" $OUT/plan_check.log
timeout 360 python benchmarks/e2e.py --layers 8 --decode 16 --repeats 2 --ttft 128,512,2048 --profile 1 --budget-s 250 \
  --variants bf16_compile,w4a8_qsm,w4a16 --out $OUT/e2e_8layers_ttft.json > $OUT/e2e_ttft.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W12" | tail -9
for f in $OUT/*.prof_*.txt; do echo "== $f"; grep -A12 "by CPU time" $f | cut -c1-60,100-125,170-200; done
