# (was: the plan check, now gpu32) ternary prefill: the new split-K tile and dequantize + cuBLAS, timed and checked
bash .gpu/gpu35.sh
