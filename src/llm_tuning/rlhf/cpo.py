"""CPO with a LoRA policy: a reference-free DPO-style loss on the policy's log-probs plus the chosen reply's NLL.

    llm-tuning cpo --data pairs.jsonl --sft_adapter weights/sft --beta 0.1 --cpo_alpha 1.0 --output_dir weights/cpo

Runs TRL's CPOTrainer (trl.experimental.cpo in trl 1.16) through the shared preference runner
(rlhf/preference.py). The same trainer runs SimPO (`llm-tuning simpo`, rlhf/simpo.py: --loss_type simpo,
length-normalised log-probs and a target margin). No reference model: CPO normally starts from an SFT
adapter (--sft_adapter). fp32 on CPU (TRL defaults to bf16, 10-20x slower there).
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

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo")


@dataclass
class CPOOptions:
    """The loss options of TRL's CPOTrainer, shared by `cpo` and `simpo` (which only change their defaults)."""

    loss_type: str = option(
        "sigmoid", "sigmoid (CPO), hinge, ipo, simpo (length-normalised, with --simpo_gamma)"
    )
    beta: float = option(0.1, "scale of the log-prob difference inside the loss")
    cpo_alpha: float = option(
        1.0, "weight of the chosen reply's NLL (behaviour cloning) next to the preference loss"
    )
    simpo_gamma: float = option(0.5, "target reward margin of --loss_type simpo")
    label_smoothing: float = option(0.0, "assumed share of flipped labels (sigmoid loss)")

    def __post_init__(self) -> None:
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_positive("beta", self.beta)
        check_positive("cpo_alpha", self.cpo_alpha, allow_zero=True)
        check_positive("simpo_gamma", self.simpo_gamma, allow_zero=True)
        check_range("label_smoothing", self.label_smoothing, 0, 0.5)


@dataclass
class CPOConfig(ModelOptions, LoraOptions, PreferenceDataOptions, PreferenceTrainerOptions, CPOOptions):
    """Contrastive preference optimisation (no reference model) of a LoRA adapter on {prompt, chosen, rejected} pairs."""

    output_dir: str = option("weights/cpo", "where the adapter, logs and checkpoints go")
    learning_rate: float = option(5e-5, "peak learning rate")

    def __post_init__(self) -> None:
        validate_groups(self)


def arguments(cfg: CPOOptions) -> dict[str, Any]:
    return {"loss_type": cfg.loss_type, "beta": cfg.beta, "cpo_alpha": cfg.cpo_alpha,
            "simpo_gamma": cfg.simpo_gamma, "label_smoothing": cfg.label_smoothing}  # fmt: skip


CPO = PreferenceMethod("CPO", "trl.experimental.cpo", ("CPOConfig", "CPOTrainer"), arguments, reference=False)


def run(cfg: CPOConfig) -> PreferenceResult:
    """Read the pairs, train with TRL's CPOTrainer, evaluate, save adapter and report."""
    return run_preference(cfg, CPO)
