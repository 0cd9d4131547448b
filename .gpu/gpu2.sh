export PYTHONPATH=$PWD
timeout 200 python benchmarks/lowered_vs_fake.py --presets w4a4-qsm,w4a8-qsm,w8a8-smooth-g64,w4a8 --dtypes float32,bfloat16 --out $OUT/lowered_vs_fake.json 2>&1 | grep -v Warning | tail -12
timeout 330 python benchmarks/gemm.py --sweep-grouped --out $OUT/gemm > $OUT/grouped.txt 2>&1
grep -c GROUPED $OUT/grouped.txt; grep failed $OUT/grouped.txt | head -5
