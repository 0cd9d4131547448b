# issue 20 / 18 (queued for the next session): the prompt and batch plans on hardware (plan_check's multi-row cases),
# host µs per op (now with 16-row and 128-row rows), then TTFT 128/512/2048 of w4a16 and w4a8-qsm at 8 layers with
# a profile of a 512-token prefill (its CPU time: w4a8-qsm has ≈ 1.5 ms per layer of host time at 512 tokens, gpu47)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"
(cd benchmarks && timeout 200 python launch_overhead.py --json $OUT/launch_overhead.json > $OUT/launch.log 2>&1; echo "launch rc $?")
grep -v -i warn $OUT/plan_check.log | tail -30; cut -c1-120 $OUT/launch.log
timeout 330 python benchmarks/e2e.py --layers 8 --decode 32 --repeats 3 --ttft 128,512,2048 \
  --profile 2 --variants bf16_compile,w4a16,w4a8_qsm --out $OUT/e2e_8layers_ttft.json > $OUT/e2e_ttft.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W12" | tail -10
