import os

# On CUDA, MLX runs float32 matmuls as TF32 unless told otherwise; parity tests need real fp32.
os.environ.setdefault("MLX_ENABLE_TF32", "0")
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
