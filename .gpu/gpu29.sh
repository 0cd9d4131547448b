# issue 18: 2-layer e2e with the static quantizer fused by inductor vs as its own kernel (same machine), then the check
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
nvidia-smi --query-gpu=name --format=csv,noheader
A="--layers 2 --decode 64 --repeats 2 --variants bf16_compile,w4a8_qsm"
timeout 110 python benchmarks/e2e.py $A --out $OUT/e2e_2layers_fused.json > $OUT/e2e_2layers_fused.log 2>&1; echo "fused rc $?"
timeout 110 python .gpu/e2e_unfused.py $A --out $OUT/e2e_2layers_unfused.json > $OUT/e2e_2layers_unfused.log 2>&1; echo "unfused rc $?"
for f in fused unfused; do grep -E "tok/s" $OUT/e2e_2layers_$f.log | grep -v -i warn | tail -3; done
