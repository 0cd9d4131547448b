# issue 18: integer group steps (QServe-style) W4A8/W4A4 kernels vs bf16 and today's grouped paths
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 400 python .gpu/intsteps_probe.py $OUT/intsteps_probe.json > $OUT/intsteps_probe.log 2>&1; echo "probe rc $?"
grep -v "^W1206\|warn" $OUT/intsteps_probe.log | tail -32
