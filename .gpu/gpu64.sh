# Issue 18's w4a4-qsm lines at 32 layers (gpu63's time budget skipped it), with this session's later changes
# (untie fix, one pack cache per plan, float weights released): bf16+compile and w4a4-qsm, 4K prefill and batch-8
# decode, then w4a8-qsm if the time allows; resident memory per variant in the JSON.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 570 python benchmarks/e2e.py --layers 32 --batch 8 --decode 32 --repeats 3 --budget-s 330 --profile 1 \
  --variants bf16_compile,w4a4_qsm,w4a8_qsm --out $OUT/e2e_32layers_b8_w4a4.json > $OUT/e2e_32.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_32.log | grep -v "^W12" | grep -E "tok/s|FAILED|sites|variant| \| |summed" | tail -14
python -c "import json; d=json.load(open('$OUT/e2e_32layers_b8_w4a4.json')); [print(k, v.get('resident_mem_gib'), v.get('peak_mem_gib')) for k, v in d['variants'].items()]"
