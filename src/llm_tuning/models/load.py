"""Load a tokenizer and a causal LM for any `--model` value, on the right device and precision.

Precision rule (shared by every command): fp32 on CPU, where bf16/fp16 matmuls are ~20x slower;
bf16 on GPUs that support it, else fp16; `--dtype` overrides.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from llm_tuning.config import ConfigError
from llm_tuning.models.resolve import ModelNotFoundError, resolve_model

logger = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}  # fmt: skip


def pick_device(requested: str = "auto") -> torch.device:
    """The device to run on; under torchrun / accelerate each rank takes its LOCAL_RANK GPU."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU, bf16 on GPUs that have it, fp16 on older GPUs; an explicit choice wins."""
    if requested != "auto":
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def mixed_precision_flags(dtype: torch.dtype, fp16: bool = False, bf16: bool = False) -> dict[str, bool]:
    """Trainer's fp16 / bf16 flags: only meaningful on a GPU; on CPU they would run at bf16 speed."""
    if not torch.cuda.is_available():
        if fp16 or bf16:
            logger.warning("--fp16/--bf16 ignored on CPU: half-precision matmuls are ~20x slower here")
        return {"fp16": False, "bf16": False}
    if fp16 or bf16:
        return {"fp16": fp16, "bf16": bf16}
    return {"fp16": dtype == torch.float16, "bf16": dtype == torch.bfloat16}


def load_tokenizer(model: str, trust_remote_code: bool = False, padding_side: str = "right") -> Any:
    """The model's tokenizer, with a pad token guaranteed (eos when the model has none)."""
    from transformers import AutoTokenizer

    path = resolve_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ModelNotFoundError(_not_found_message(model, err)) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(
    model: str,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    for_training: bool = False,
    device_map: Any = None,
) -> Any:
    """A causal LM on `device` in the resolved precision (see module docstring)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(model)
    target = pick_device(device)
    torch_dtype = pick_dtype(dtype, target)
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code, device_map=device_map
        )
    except OSError as err:
        raise ModelNotFoundError(_not_found_message(model, err)) from err
    if device_map is None:
        lm.to(target)
    if for_training:
        lm.config.use_cache = False
    else:
        lm.eval()
    logger.info("loaded %s (%s, %s, %.1fM parameters)", model, target, torch_dtype, lm.num_parameters() / 1e6)
    return lm


def _not_found_message(model: str, err: Exception) -> str:
    from llm_tuning.models.resolve import EMBEDDED_MODELS

    return (
        f"could not load model {model!r}: {' '.join(str(err).split())} "
        f"Use a local Hugging Face folder (with config.json), a hub id reachable from this machine, "
        f"or a built-in name: {', '.join(EMBEDDED_MODELS)}"
    )


class NonFiniteError(ConfigError):
    """A loss or weight that is NaN or infinite; the message names the likely cause (exit 2 in the CLI)."""


def non_finite_tensors(model: Any, limit: int = 3) -> list[str]:
    """Names of (up to `limit`) parameters or buffers holding NaN or inf."""
    bad = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def likely_nan_cause(model: Any) -> str:
    """What usually makes this model's loss non-finite, for an error message."""
    bad = non_finite_tensors(model)
    if bad:
        return (
            f"these weights or buffers hold NaN/inf: {', '.join(bad)} (a remote-code model's buffers that are "
            "not saved with the weights, such as rotary cos/sin caches, come back uninitialised: fix its code "
            "to rebuild them, or load a checkpoint that was saved whole)"
        )
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if dtype == torch.float16:
        return "fp16 activations overflow: use --dtype bfloat16 or float32"
    if "transformers_modules" in type(getattr(model, "get_base_model", lambda: model)()).__module__:
        return (
            "this model runs its own remote code, whose caches (e.g. rotary cos/sin buffers) may not have "
            "been rebuilt under this transformers version; check it in float32 without LoRA first"
        )
    return "the weights are finite, so the forward itself overflows: try --dtype float32 or a lower learning rate"
