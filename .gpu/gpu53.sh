# The int8 GEMM where it leaves speed behind: a persistent TMA kernel at prefill sizes (512-8192 rows), the tile at
# prompt sizes (128-2048 rows; the unpack pass of W4A8's prompt path beside them) and at decode sizes (1-16 rows,
# W8A8), each against bf16; the plans of main checked on hardware first.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; grep -c " ok$" $OUT/plan_check.log; tail -1 $OUT/plan_check.log
timeout 200 python .gpu/int8_tma_probe.py --json $OUT/int8_tma.json > $OUT/int8_tma.log 2>&1; echo "tma probe rc $?"
grep -v -i warn $OUT/int8_tma.log | tail -15 | cut -c1-250
timeout 170 python .gpu/int8_prompt_tile_probe.py --json $OUT/int8_prompt_tile.json > $OUT/int8_prompt_tile.log 2>&1; echo "tile probe rc $?"
grep -v -i warn $OUT/int8_prompt_tile.log | tail -21
timeout 90 python .gpu/int8_small_m_probe.py --json $OUT/int8_small_m.json > $OUT/int8_small_m.log 2>&1; echo "small-M probe rc $?"
grep -v -i warn $OUT/int8_small_m.log | tail -13
