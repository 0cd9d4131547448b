# The illegal address of gpu54 (w4a8 integer steps at 2,100 rows with xs + bias; w4a8-qsm end to end): which case.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python .gpu/persistent_debug.py
