# The last ≈ 250 s of device time: only the plans on hardware after the persistent kernel's stride fix.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 70 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; grep -E "FAILED|2100|all plan" $OUT/plan_check.log
