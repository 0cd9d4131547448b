# issue 20 prompt GEMM: nibble-plane W4A16 tile vs shipped vs cuBLAS bf16 (16-256 rows)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python .gpu/w4a16_planes_probe.py 2>&1 | tee $OUT/w4a16_planes_probe.log | grep -v Warn | cut -c1-260
