"""qpass: a PyTorch compiler for quantized LLM inference."""
