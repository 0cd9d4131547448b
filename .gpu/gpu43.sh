# issue 20: does the nibble-plane step also win at 17-64 rows? (bucket config with PLANES forced vs as shipped vs bf16)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
MS=24,32,48,64 FORMS=1 NAME=w4a16_planes_buckets timeout 100 python .gpu/w4a16_planes_check.py 2>&1 | tee $OUT/w4a16_planes_buckets.log | grep -v Warn | cut -c1-200
