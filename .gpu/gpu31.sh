# issue 20: the per-signature plans on hardware, then host µs per op (gpu34; the three-shape prompt sweep that was
# here is covered by gpu33)
bash .gpu/gpu34.sh
