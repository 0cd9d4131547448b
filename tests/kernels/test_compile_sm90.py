"""Compile every shipped kernel config for sm_90 (no GPU needed): catches what the interpreter lets through.
Also the configs of the benchmarked variants in benchmarks/variants/ (they run on the H100 too).

Runs in a subprocess because the compiler cannot run in a process where TRITON_INTERPRET=1 is set.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import functools
    import importlib.util
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path
    import qpass.kernels.configs as C

    VARIANTS = Path(@VARIANTS@)

    @functools.lru_cache(None)
    def configs():
        out = list(C.shipped())
        for f in sorted(VARIANTS.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"variants_{f.stem}", f)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            out += mod.shipped_configs()
        return out

    def one(i):
        name, k, sig, ce, o = configs()[i]
        try:
            C.compile_sm90(k, sig, ce, o)
            return name, None
        except Exception as e:
            return name, f"{type(e).__name__}: {str(e)[-800:]}"

    if __name__ == "__main__":
        n = len(configs())
        with ProcessPoolExecutor(max_workers=max(1, min(4, __import__("os").cpu_count() or 1))) as ex:
            bad = [(nm, err) for nm, err in ex.map(one, range(n)) if err]
        for nm, err in bad:
            print("FAILED", nm, err)
        print(f"compiled {n - len(bad)}/{n}")
        sys.exit(1 if bad else 0)
""")


def test_all_shipped_configs_compile_for_sm90(tmp_path):
    script = tmp_path / "compile_all.py"
    variants = Path(__file__).resolve().parents[2] / "benchmarks" / "variants"
    script.write_text(SCRIPT.replace("@VARIANTS@", repr(str(variants))))
    root = str(Path(__file__).resolve().parents[2])  # this checkout's qpass, not another one installed
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1", PYTHONPATH=path)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
