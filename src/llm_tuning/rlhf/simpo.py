"""SimPO with a LoRA policy: length-normalised log-probs as the reward, a target margin, no reference model.

    llm-tuning simpo --data pairs.jsonl --sft_adapter weights/sft --beta 2.0 --simpo_gamma 0.5 --output_dir weights/simpo

TRL's CPOTrainer with loss_type "simpo" and no NLL term (--cpo_alpha 0; above 0 it is CPO-SimPO),
through the shared preference runner (rlhf/preference.py). The defaults follow the SimPO paper's
range (beta 2, gamma 0.5). Reference-free: it normally starts from an SFT adapter (--sft_adapter).
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_tuning.config import LoraOptions, ModelOptions, option, validate_groups
from llm_tuning.rlhf.common import PreferenceDataOptions, PreferenceTrainerOptions
from llm_tuning.rlhf.cpo import CPO, CPOOptions, arguments
from llm_tuning.rlhf.preference import PreferenceMethod, PreferenceResult, run_preference


@dataclass
class SimPOConfig(ModelOptions, LoraOptions, PreferenceDataOptions, PreferenceTrainerOptions, CPOOptions):
    """Simple preference optimisation (length-normalised, no reference model) of a LoRA adapter on pairs."""

    output_dir: str = option("weights/simpo", "where the adapter, logs and checkpoints go")
    learning_rate: float = option(5e-5, "peak learning rate")
    loss_type: str = option("simpo", "simpo; or sigmoid, hinge, ipo (then it is CPO's loss)")
    beta: float = option(2.0, "scale of the length-normalised log-prob difference (the paper uses 2 to 2.5)")
    cpo_alpha: float = option(0.0, "weight of the chosen reply's NLL (0: SimPO; > 0: CPO-SimPO)")

    def __post_init__(self) -> None:
        validate_groups(self)


SIMPO = PreferenceMethod("SimPO", CPO.trl_module, CPO.trl_names, arguments, reference=False)


def run(cfg: SimPOConfig) -> PreferenceResult:
    """Read the pairs, train with TRL's CPOTrainer's SimPO loss, evaluate, save adapter and report."""
    return run_preference(cfg, SIMPO)
