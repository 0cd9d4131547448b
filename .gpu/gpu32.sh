# (the TTFT run that was here is gpu37) issue 20: the per-signature plans checked on hardware, host µs per op
bash .gpu/gpu34.sh
