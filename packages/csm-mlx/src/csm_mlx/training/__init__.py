"""Training CSM in MLX: the transformers loss, LoRA and full fine-tuning (AdamW, schedules, checkpoints)."""
