"""restore: Silver Bullet pairs (`qmr.restore.silver`) and DPO + LoRA on the quantized model
(`qmr.restore.train`). Import the submodules directly; nothing heavy is imported here."""
