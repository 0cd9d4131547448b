# issue 20: host µs per op issued without waiting for the GPU (blocks of 200 calls) beside the old back-to-back wall
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
(cd benchmarks && timeout 200 python launch_overhead.py --json $OUT/launch_overhead.json > $OUT/launch.log 2>&1; echo "launch rc $?")
(cd benchmarks && timeout 60 python launch_overhead.py --profile int8 > $OUT/profile_int8.txt 2>&1; echo "profile rc $?")
cat $OUT/launch.log | cut -c1-110; grep -A14 "ncalls" $OUT/profile_int8.txt | cut -c1-150
