# After folding down_proj's sorted order into gate/up rows (no run-time gather) and qpass::attention returning
# flash's [B, S, H, D] memory (no copy before o_proj): gpu60's 8-layer run again (same variants and flags).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 400 python benchmarks/e2e.py --layers 8 --decode 16 --repeats 2 --ttft 128,512,2048 --profile 1 --budget-s 250 \
  --variants bf16_compile,w4a8_qsm,w4a16 --out $OUT/e2e_8layers_ttft.json > $OUT/e2e_ttft.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W12" | tail -9
for f in $OUT/*.prof_*.txt; do echo "== $f"; sed -n '/4096-token/,$p' $f | cut -c1-57,160-200 | head -16; done
