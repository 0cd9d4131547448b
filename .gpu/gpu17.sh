# issue 18: where the InductorError's s52 comes from (4 layers, TORCH_LOGS=dynamic)
export PYTHONUNBUFFERED=1 TORCH_LOGS="+dynamic"
PYTHONPATH=$PWD timeout 200 python .gpu/qsm_inductor_repro.py w4a8-qsm int 4 > $OUT/repro_dyn.log 2>&1; echo "rc $?"
grep -n "create_symbol s52\|create_symbol s27\|s52 = \|set_replacement s52\|eval s52\|_update_var_to_range s52" $OUT/repro_dyn.log | head -20
grep -n "create_symbol" $OUT/repro_dyn.log | head -60 | cut -c1-300
