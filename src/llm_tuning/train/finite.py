"""Stop training at the first non-finite loss or gradient norm, naming the likely cause.

    llm-tuning train --data train.jsonl --logging_steps 1     # checked at every logged step

A NaN loss does not stop Hugging Face Trainer: by default it logs the mean of the earlier losses in its
place (`logging_nan_inf_filter`), so a broken model "trains" with loss 0, grad_norm nan, and writes NaN
weights. Here the filter is off and this callback raises at the first logged NaN / inf, before the
adapter is saved. The start-up check (train/speed.py) catches a model that is broken before step 1.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from llm_tuning.models.load import NonFiniteError, likely_nan_cause, non_finite_tensors

WATCHED = ("loss", "grad_norm", "train_loss", "eval_loss")


class FiniteGuard(TrainerCallback):
    """Raise NonFiniteError when a logged loss or gradient norm is NaN or infinite."""

    def __init__(self, model: Any, fp16: bool = False) -> None:
        self.model = model
        self.fp16 = fp16

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        bad = {
            k: v
            for k, v in (logs or {}).items()
            if k in WATCHED and isinstance(v, float) and not math.isfinite(v)
        }
        if not bad:
            return
        broken = non_finite_tensors(self.model)
        if self.fp16 or getattr(args, "fp16", False):
            cause = "fp16 mixed precision overflows: use --bf16 or train in float32"
        elif broken and all("lora_" in name for name in broken):
            cause = (
                f"the updates diverged (the LoRA weights now hold NaN/inf): lower --learning_rate "
                f"(now {args.learning_rate:g}) and keep --max_grad_norm above 0 (now {args.max_grad_norm:g})"
            )
        else:
            cause = likely_nan_cause(self.model)
        raise NonFiniteError(
            f"training stopped at step {state.global_step}: {', '.join(f'{k} {v}' for k, v in bad.items())}. "
            f"Likely cause: {cause}. No adapter was written."
        )
