"""llm-tuning: one LoRA pipeline for every Hugging Face causal LM."""

__version__ = "0.1.0"
