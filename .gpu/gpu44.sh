# issue 20: gpu43 (plane step forced on the 17-64-row buckets) then gpu38 (plain generate, 32 layers)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
MS=24,32,48,64 FORMS=1 NAME=w4a16_planes_buckets timeout 100 python .gpu/w4a16_planes_check.py > $OUT/w4a16_planes_buckets.log 2>&1; echo "planes rc $?"
timeout 330 python benchmarks/e2e.py --layers 32 --decode 64 --repeats 2 --variants bf16_eager,w4a16_generate \
  --out $OUT/e2e_generate32.json > $OUT/e2e_generate.log 2>&1; echo "e2e rc $?"
grep -v Warn $OUT/w4a16_planes_buckets.log | cut -c1-200 | tail -30
grep -v -i warn $OUT/e2e_generate.log | grep -v "^W12" | tail -8
