"""qpass.kernels: low-bit Triton kernels registered as torch custom ops, each beside its reference."""
