# (gpu31 now runs gpu34: the three-shape prompt sweep is covered by gpu33) issue 20: the per-signature plans on hardware, then host µs per op
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"
(cd benchmarks && timeout 150 python launch_overhead.py --json $OUT/launch_overhead.json > $OUT/launch.log 2>&1; echo "launch rc $?")
(cd benchmarks && timeout 100 env -u TRITON_INTERPRET python host_python.py > $OUT/host_python.log 2>&1; echo "host_python rc $?")
cat $OUT/plan_check.log | tail -16; cat $OUT/launch.log | cut -c1-100; cat $OUT/host_python.log
