# issue 20 / 18: the host-path changes checked on hardware (plans vs references), host µs per op, then
# w4a8-qsm decode b1 (32 layers) with the dp4a GEMV on the same kind of GPU as gpu40's w4a4-qsm row
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"
(cd benchmarks && timeout 150 python launch_overhead.py --json $OUT/launch_overhead.json > $OUT/launch.log 2>&1; echo "launch rc $?")
(cd benchmarks && timeout 100 env -u TRITON_INTERPRET python host_python.py > $OUT/host_python.log 2>&1; echo "host_python rc $?")
cat $OUT/plan_check.log | grep -v -i warn | tail -20; cat $OUT/launch.log | cut -c1-100; cat $OUT/host_python.log
timeout 390 python benchmarks/e2e.py --layers 32 --decode 128 --repeats 2 --variants bf16_compile,w4a8_qsm \
  --out $OUT/e2e_32layers_b1_w4a8_dp4a.json > $OUT/e2e_b1_w4a8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_b1_w4a8.log | grep -v "^W12" | tail -5
