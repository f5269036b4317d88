"""DPO with a LoRA policy: the reference is the same base model, never a second copy.

    llm-tuning dpo --data pairs.jsonl --sft_adapter weights/sft --beta 0.1 --loss_type sigmoid \
        --num_train_epochs 1 --output_dir weights/dpo

Runs TRL's DPOTrainer with ref_model=None. A new adapter's reference is the base with adapters
disabled; with --sft_adapter, TRL adds a frozen copy of it ("ref") on the same base, so the reference
is the model DPO starts from. fp32 on CPU (TRL defaults to bf16, 10-20x slower there). Reports the
implicit reward margin and accuracy (chosen reward > rejected reward) on the held-out pairs. The
flow (data, policy, trainer, held-out scores, saving) is the shared one of rlhf/preference.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_tuning.config import (
    LoraOptions,
    ModelOptions,
    check_choice,
    check_positive,
    check_range,
    option,
    validate_groups,
)
from llm_tuning.rlhf.common import PreferenceDataOptions, PreferenceTrainerOptions
from llm_tuning.rlhf.preference import PreferenceMethod, PreferenceResult, run_preference

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")  # fmt: skip


@dataclass
class DPOConfig(ModelOptions, LoraOptions, PreferenceDataOptions, PreferenceTrainerOptions):
    """Direct preference optimisation of a LoRA adapter on {prompt, chosen, rejected} pairs."""

    output_dir: str = option("weights/dpo", "where the adapter, logs and checkpoints go")
    learning_rate: float = option(5e-5, "peak learning rate")
    beta: float = option(0.1, "strength of the pull toward the reference (higher: stay closer)")
    loss_type: str = option("sigmoid", "sigmoid (DPO), hinge (SLiC), ipo, robust, ... (TRL's loss types)")
    label_smoothing: float = option(0.0, "assumed share of flipped labels (robust / cDPO)")

    def __post_init__(self) -> None:
        validate_groups(self)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_positive("beta", self.beta)
        check_range("label_smoothing", self.label_smoothing, 0, 0.5)


def arguments(cfg: DPOConfig) -> dict[str, Any]:
    return {"beta": cfg.beta, "loss_type": [cfg.loss_type], "label_smoothing": cfg.label_smoothing}


DPO = PreferenceMethod("DPO", "trl", ("DPOConfig", "DPOTrainer"), arguments)


def run(cfg: DPOConfig) -> PreferenceResult:
    """Read the pairs, train with TRL's DPOTrainer, evaluate, save adapter and report."""
    return run_preference(cfg, DPO)
