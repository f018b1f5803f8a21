"""The adapter catalogue: find, validate, version and track LoRA adapters."""
