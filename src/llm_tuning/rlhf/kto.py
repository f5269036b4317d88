"""KTO with a LoRA policy: unpaired feedback (one reply, good or bad), against the model it starts from.

    llm-tuning kto --data feedback.jsonl --sft_adapter weights/sft --beta 0.1 --output_dir weights/kto

Rows are {prompt, completion, label} (label true: a good reply; "true"/"false" in CSV; rlhf/data.py
names the file, row and field of a bad one). Runs TRL's KTOTrainer with ref_model=None through the
shared preference runner (rlhf/preference.py): the reference is the base with adapters disabled, or
TRL's frozen copy of --sft_adapter. KTO estimates its KL term from mismatched prompt/reply pairs of a
batch, so a batch needs at least 2 rows. The held-out score is the share of rows whose log-ratio to
the start model moves the way the label says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from llm_tuning.config import (
    ConfigError,
    LoraOptions,
    ModelOptions,
    check_choice,
    check_positive,
    option,
    validate_groups,
)
from llm_tuning.rlhf.common import PreferenceDataOptions, PreferenceTrainerOptions
from llm_tuning.rlhf.preference import PreferenceMethod, PreferenceResult, run_preference

LOSS_TYPES = ("kto", "apo_zero_unpaired")


@dataclass
class KTOConfig(ModelOptions, LoraOptions, PreferenceDataOptions, PreferenceTrainerOptions):
    """Kahneman-Tversky optimisation of a LoRA adapter on unpaired {prompt, completion, label} rows."""

    rows_wanted: ClassVar[str] = (
        "the feedback rows: --data FILE with prompt, completion and label (true/false) fields"
    )
    data: str | None = option(
        None, "JSON/JSONL/CSV of {prompt, completion, label} rows", aliases=("train_file",)
    )
    eval_data: str | None = option(None, "a separate file of held-out rows (default: split --eval_split off)")
    output_dir: str = option("weights/kto", "where the adapter, logs and checkpoints go")
    learning_rate: float = option(5e-5, "peak learning rate")
    beta: float = option(0.1, "strength of the pull toward the reference (higher: stay closer)")
    loss_type: str = option("kto", "kto, or apo_zero_unpaired")
    desirable_weight: float = option(1.0, "weight of the good rows' loss (raise it when they are fewer)")
    undesirable_weight: float = option(1.0, "weight of the bad rows' loss (raise it when they are fewer)")

    def __post_init__(self) -> None:
        validate_groups(self)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        for name in ("beta", "desirable_weight", "undesirable_weight"):
            check_positive(name, getattr(self, name))
        if self.per_device_train_batch_size < 2:
            raise ConfigError(f"--per_device_train_batch_size must be >= 2 for KTO (its KL estimate pairs each "
                              f"prompt with another row's reply), got {self.per_device_train_batch_size}")  # fmt: skip


def arguments(cfg: KTOConfig) -> dict[str, Any]:
    return {"beta": cfg.beta, "loss_type": cfg.loss_type, "desirable_weight": cfg.desirable_weight,
            "undesirable_weight": cfg.undesirable_weight}  # fmt: skip


KTO = PreferenceMethod("KTO", "trl", ("KTOConfig", "KTOTrainer"), arguments, unpaired=True)


def run(cfg: KTOConfig) -> PreferenceResult:
    """Read the feedback rows, train with TRL's KTOTrainer, evaluate, save adapter and report."""
    return run_preference(cfg, KTO)
