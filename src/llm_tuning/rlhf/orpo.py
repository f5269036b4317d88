"""ORPO with a LoRA policy: the chosen reply's NLL plus an odds-ratio penalty on the rejected one, no reference model.

    llm-tuning orpo --data pairs.jsonl --sft_adapter weights/sft --beta 0.1 --output_dir weights/orpo

Runs TRL's ORPOTrainer (trl.experimental.orpo in trl 1.16) through the shared preference runner
(rlhf/preference.py): same rows, errors, checkpoints, outputs and held-out scores as `dpo`. ORPO was
made to replace SFT + DPO with one stage, but starting from an SFT adapter (--sft_adapter) works too.
fp32 on CPU (TRL defaults to bf16, 10-20x slower there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_tuning.config import LoraOptions, ModelOptions, check_positive, option, validate_groups
from llm_tuning.rlhf.common import PreferenceDataOptions, PreferenceTrainerOptions
from llm_tuning.rlhf.preference import PreferenceMethod, PreferenceResult, run_preference


@dataclass
class ORPOConfig(ModelOptions, LoraOptions, PreferenceDataOptions, PreferenceTrainerOptions):
    """Odds-ratio preference optimisation (no reference model) of a LoRA adapter on {prompt, chosen, rejected} pairs."""

    output_dir: str = option("weights/orpo", "where the adapter, logs and checkpoints go")
    learning_rate: float = option(5e-5, "peak learning rate")
    beta: float = option(
        0.1, "weight of the odds-ratio term next to the chosen reply's NLL (the paper's lambda)"
    )

    def __post_init__(self) -> None:
        validate_groups(self)
        check_positive("beta", self.beta)


def arguments(cfg: ORPOConfig) -> dict[str, Any]:
    return {"beta": cfg.beta}


ORPO = PreferenceMethod(
    "ORPO", "trl.experimental.orpo", ("ORPOConfig", "ORPOTrainer"), arguments, reference=False
)


def run(cfg: ORPOConfig) -> PreferenceResult:
    """Read the pairs, train with TRL's ORPOTrainer, evaluate, save adapter and report."""
    return run_preference(cfg, ORPO)
