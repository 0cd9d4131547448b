# issue 18 / 20 (ran at 5b7a7c1; both changes reverted after it): split-K reduced in the kernel (kernels/split_k.py). Checks on hardware (plan_check + the split-K
# probe's checks: repeated calls, CUDA-graph replay), then GPU µs per call under graph replay, old tree (618f80d:
# zeroed buffer + cast) vs this one, alternating, then batched decode end to end at 32 layers.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 90 python .gpu/plan_check.py > $OUT/plan_check.log 2>&1; echo "plan_check rc $?"; tail -3 $OUT/plan_check.log
timeout 170 python .gpu/split_k_probe.py --check --json $OUT/split_new.json > $OUT/split_new.log 2>&1; echo "probe new rc $?"
grep -i "fail\|ok$" $OUT/split_new.log | tail -4
(cd .gpu/old_tree && PYTHONPATH=$PWD timeout 100 python ../split_k_probe.py --tree . --json $OUT/split_old.json > $OUT/split_old.log 2>&1; echo "probe old rc $?")
python - <<'PY'
import json, os
o = {(r["M"], r["N"], r["K"]): r for r in json.load(open(os.environ["OUT"] + "/split_old.json"))["rows"]}
f1 = lambda v: f"{v:6.1f}" if v else "     -"
for f in ("split_new.json",):
    for r in json.load(open(os.environ["OUT"] + "/" + f))["rows"]:
        a = o.get((r["M"], r["N"], r["K"]), {})
        if r["M"] > 16:
            print(f"{f[:10]} M={r['M']:>3} {r['N']:>5}x{r['K']:<5} bf16 {f1(r['bf16'])} | op {f1(r['w4a8_qsm'])} | "
                  f"int tiles 64/128/256 {f1(r['int_tile64'])} {f1(r['int_tile128'])} {f1(r['int_tile256'])}")
            continue
        print(f"{f[:10]} M={r['M']:>2} {r['N']:>5}x{r['K']:<5} bf16 {f1(r['bf16'])} | w4a16 {f1(r['w4a16'])} old "
              f"{f1(a.get('w4a16'))} | w4a8 op {f1(r['w4a8_qsm'])} old {f1(a.get('w4a8_qsm'))} float {f1(r.get('w4a8_float_steps'))} | "
              f"split2 f/i {f1(r.get('w4a8_tile_split2'))} {f1(r.get('w4a8_int_split2'))} old {f1(a.get('w4a8_tile_split2'))} | "
              f"split4 f/i {f1(r.get('w4a8_tile_split4'))} {f1(r.get('w4a8_int_split4'))} old {f1(a.get('w4a8_tile_split4'))}")
PY
timeout 330 python benchmarks/e2e.py --layers 32 --batch 8 --decode 64 --repeats 2 \
  --variants bf16_compile,w4a16 --out $OUT/e2e_32layers_b8.json > $OUT/e2e_b8.log 2>&1; echo "e2e rc $?"
grep -v -i warn $OUT/e2e_b8.log | grep -v "^W12" | tail -6
