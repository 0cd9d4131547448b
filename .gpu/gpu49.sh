# issue 18 / 20: split-K reduced in the kernel (kernels/split_k.py). Checks on hardware (plan_check + the split-K
# probe's checks: repeated calls, CUDA-graph replay), then GPU µs per call under graph replay, old tree (618f80d:
# zeroed buffer + cast) vs this one, alternating, then batched decode end to end at 32 layers.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; tail -3 $OUT/plan_check.log
timeout 150 python .gpu/split_k_probe.py --check --json $OUT/split_new.json > $OUT/split_new.log 2>&1; echo "probe new rc $?"
grep -i "fail\|ok$" $OUT/split_new.log | tail -4
(cd .gpu/old_tree && PYTHONPATH=$PWD timeout 100 python ../split_k_probe.py --tree . --json $OUT/split_old.json > $OUT/split_old.log 2>&1; echo "probe old rc $?")
timeout 100 python .gpu/split_k_probe.py --json $OUT/split_new2.json > $OUT/split_new2.log 2>&1; echo "probe new2 rc $?"
python - <<'PY'
import json, os
o = {(r["M"], r["N"], r["K"]): r for r in json.load(open(os.environ["OUT"] + "/split_old.json"))["rows"]}
for f in ("split_new.json", "split_new2.json"):
    for r in json.load(open(os.environ["OUT"] + "/" + f))["rows"]:
        a = o[(r["M"], r["N"], r["K"])]
        print(f"{f[:10]} M={r['M']:>2} {r['N']:>5}x{r['K']:<5} bf16 {r['bf16']:5.1f}/{a['bf16']:5.1f} | w4a16 {r['w4a16']:5.1f} (old {a['w4a16']:5.1f}) | "
              f"w4a8 {r['w4a8_qsm']:5.1f} (old {a['w4a8_qsm']:5.1f}) | split2 {r.get('w4a8_tile_split2', 0):5.1f} (old {a.get('w4a8_tile_split2', 0):5.1f}) | "
              f"split4 {r.get('w4a8_tile_split4', 0):5.1f} (old {a.get('w4a8_tile_split4', 0):5.1f})")
PY
timeout 420 python benchmarks/e2e.py --layers 32 --batch 8 --decode 64 --repeats 2 \
  --variants bf16_compile,w4a16 --out $OUT/e2e_32layers_b8.json > $OUT/e2e_b8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_b8.log | grep -v "^W12" | tail -6
