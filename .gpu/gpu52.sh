# The device time left (≈ 250 s): the plans on hardware after the revert, and the int8 GEMM's prompt tile probe.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 45 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; tail -1 $OUT/plan_check.log
timeout 75 python .gpu/int8_prompt_tile_probe.py --json $OUT/int8_prompt_tile.json > $OUT/int8_prompt_tile.log 2>&1; echo "tile probe rc $?"
grep -v -i warn $OUT/int8_prompt_tile.log | tail -14
