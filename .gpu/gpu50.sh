# issue 18 / 20 after gpu49: batched decode of w4a8-qsm at 32 layers with the integer-step tile and the in-kernel
# split-K; then time to first token at 8 layers with a profile of a 512-token prompt (where the per-layer fixed
# cost of the uncaptured prompt forward goes).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 380 python benchmarks/e2e.py --layers 32 --batch 8 --decode 64 --repeats 2 \
  --variants bf16_compile,w4a8_qsm --out $OUT/e2e_32layers_b8_qsm.json > $OUT/e2e_b8_qsm.log 2>&1; echo "e2e b8 rc $?"
grep -v -i warn $OUT/e2e_b8_qsm.log | grep -v "^W12" | tail -5
timeout 200 python benchmarks/e2e.py --layers 8 --decode 16 --repeats 3 --ttft 128,512,2048 --profile 2 \
  --variants bf16_compile,w4a8_qsm --out $OUT/e2e_8layers_ttft.json > $OUT/e2e_ttft.log 2>&1; echo "e2e ttft rc $?"
grep -v -i warn $OUT/e2e_ttft.log | grep -v "^W12" | tail -6
