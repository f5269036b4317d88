"""QLoRA: LoRA on a 4-bit (NF4) base model through bitsandbytes, for CUDA GPUs.

    llm-tuning train --data train.jsonl --load_in_4bit --gradient_checkpointing

The base weights are stored in 4 bits (about a quarter of bf16's memory) and computed in bf16 (fp16 on
GPUs without bf16); the adapter trains as usual and saves in the same layout as plain LoRA. Refused on
CPU, where bitsandbytes' 4-bit kernels do not train, and when bitsandbytes is not installed.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from llm_tuning.config import ConfigError
from llm_tuning.models.load import pick_device, pick_dtype
from llm_tuning.models.resolve import ModelNotFoundError, resolve_model

logger = logging.getLogger(__name__)


def check_4bit(device: str) -> None:
    """Raise ConfigError unless 4-bit training can run here."""
    if not torch.cuda.is_available() or pick_device(device).type != "cuda":
        raise ConfigError("--load_in_4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels); on this machine drop "
                          "--load_in_4bit and train plain LoRA")  # fmt: skip
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "--load_in_4bit needs bitsandbytes: `pip install bitsandbytes`, or drop --load_in_4bit"
        )


def load_4bit_model(
    model: str, dtype: str, device: str, trust_remote_code: bool, gradient_checkpointing: bool
) -> Any:
    """An NF4 (double-quantized) causal LM on this rank's GPU, prepared for k-bit training."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    check_4bit(device)
    target = pick_device(device)
    compute = pick_dtype(dtype, target)
    if compute == torch.float32:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)  # fmt: skip
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            resolve_model(model), quantization_config=quant, dtype=compute, device_map={"": target.index or 0},
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
    except OSError as err:
        raise ModelNotFoundError(f"could not load model {model!r} in 4 bits: {err}") from err
    lm.config.use_cache = False
    logger.info("loaded %s in 4 bits (NF4, compute %s) on %s", model, compute, target)
    return prepare_model_for_kbit_training(lm, use_gradient_checkpointing=gradient_checkpointing)
