"""llm-tuning: one LoRA pipeline for every Hugging Face causal LM."""

import os

# PyTorch's CPU allocator puts tensors of 2 MiB and more on 2 MiB-aligned transparent huge pages (Linux).
# Measured on CPU LoRA training (bench/README.md): about a quarter less peak memory at the same speed.
# torch reads it once, at its first allocation, so it is set here, before torch is imported; a value the
# user set (THP_MEM_ALLOC_ENABLE=0) wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
