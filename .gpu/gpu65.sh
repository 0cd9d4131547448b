# Issue 18 batched decode: the multi-row dp4a GEMV swept and timed against the shipped paths.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
git show db226f2:kernels/int8/gemv.py > .gpu/gemv_before.py  # the one-row-per-program kernel, for the "old" column
nvidia-smi --query-gpu=name --format=csv,noheader
BUDGET=260 timeout 500 python .gpu/dp4a_rows_probe.py 2>&1 | grep -v -i warn | tee $OUT/dp4a_rows_probe.log | tail -60
