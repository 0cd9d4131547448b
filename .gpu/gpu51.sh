# After the revert (the shipped split-K: zero fill + tile + cast): the plans of 618f80d on hardware (plan_check's
# multi-row cases were not GPU-checked with that split), then time to first token at 8 layers with a profile of a
# 512-token prompt (CPU and CUDA time: where the per-layer fixed cost of the uncaptured prompt forward goes).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 70 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; tail -1 $OUT/plan_check.log
timeout 150 python .gpu/int8_prompt_tile_probe.py --json $OUT/int8_prompt_tile.json > $OUT/int8_prompt_tile.log 2>&1; echo "tile probe rc $?"
cat $OUT/int8_prompt_tile.log | grep -v -i warn | tail -24
timeout 230 python benchmarks/e2e.py --layers 8 --decode 16 --repeats 3 --ttft 128,512 --profile 2 \
  --variants bf16_compile,w4a8_qsm --out $OUT/e2e_8layers_ttft.json > $OUT/e2e_ttft.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W12" | tail -9
for f in $OUT/*.prof_*.txt; do echo "== $f"; grep -A14 "by CPU time" $f | cut -c1-150; done
