"""DPO with a LoRA policy: the reference is the same base model, never a second copy.

    llm-tuning dpo --data pairs.jsonl --sft_adapter weights/sft --beta 0.1 --loss_type sigmoid \
        --num_train_epochs 1 --output_dir weights/dpo

Runs TRL's DPOTrainer with ref_model=None. A new adapter's reference is the base with adapters
disabled; with --sft_adapter, TRL adds a frozen copy of it ("ref") on the same base, so the reference
is the model DPO starts from. fp32 on CPU (TRL defaults to bf16, 10-20x slower there). Reports the
implicit reward margin and accuracy (chosen reward > rejected reward) on the held-out pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
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
from llm_tuning.data.template import prompt_text, with_system
from llm_tuning.models.load import load_model, load_tokenizer, pick_device, pick_dtype
from llm_tuning.models.lora import attach_lora, lora_config
from llm_tuning.reporting import LogCollector, write_training_report
from llm_tuning.rlhf.common import (
    PreferenceDataOptions,
    PreferenceTrainerOptions,
    begin_run,
    check_adapter_flags,
    keep_short,
    load_preference_splits,
    save_outputs,
)
from llm_tuning.rlhf.data import PreferencePair, encode_reply, render_prompt
from llm_tuning.training_options import trainer_arguments

logger = logging.getLogger(__name__)
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


@dataclass
class DPOResult:
    output_dir: Path
    train_loss: float
    steps: int
    accuracy: float | None  # share of held-out pairs whose implicit chosen reward is higher
    margin: float | None  # mean implicit reward margin on the held-out pairs
    log: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        held_out = (f"held-out reward accuracy {self.accuracy:.1%}, mean margin {self.margin:+.3f}"
                    if self.accuracy is not None else "no held-out pairs")  # fmt: skip
        return f"DPO adapter saved to {self.output_dir}: {held_out}; train loss {self.train_loss:.4f} over {self.steps} steps"


def to_trl_rows(tokenizer: Any, pairs: list[PreferencePair], cfg: DPOConfig) -> list[dict[str, Any]]:
    """Conversational rows (TRL applies the chat template itself), or plain text with --template none."""
    if cfg.template == "none":
        return [{"prompt": prompt_text(tokenizer, p.prompt, "none"),
                 "chosen": p.chosen, "rejected": p.rejected} for p in pairs]  # fmt: skip
    return [{"prompt": with_system(p.prompt, cfg.system_prompt), "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]  # fmt: skip


def fitting_pairs(
    tokenizer: Any, pairs: list[PreferencePair], cfg: DPOConfig, path: str
) -> list[PreferencePair]:
    """The pairs whose prompt + reply fit --max_length tokens, as the flag says (TRL would cut the others)."""
    encoded = []
    for pair in pairs:
        prompt = render_prompt(tokenizer, pair.prompt, cfg.template, cfg.system_prompt)
        encoded.append(
            (encode_reply(tokenizer, prompt, pair.chosen), encode_reply(tokenizer, prompt, pair.rejected))
        )
    return [pairs[i] for i in keep_short(encoded, cfg.max_length, path)]


def build_policy(cfg: DPOConfig) -> tuple[Any, Any]:
    """(model, peft_config): a PeftModel from --sft_adapter (TRL copies it as the reference), else base + config."""
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, for_training=True)
    if cfg.sft_adapter:
        return attach_lora(model, None, cfg.sft_adapter, "--sft_adapter"), None
    return model, lora_config(model, cfg)


def held_out_metrics(
    records: list[dict[str, Any]], evaluated: dict[str, float] | None
) -> tuple[float | None, float | None]:
    if evaluated:
        return evaluated.get("eval_rewards/accuracies"), evaluated.get("eval_rewards/margins")
    last = next((r for r in reversed(records) if "rewards/accuracies" in r), None)
    return (None, None) if last is None else (last["rewards/accuracies"], last.get("rewards/margins"))


def run(cfg: DPOConfig) -> DPOResult:
    """Read the pairs, train with TRL's DPOTrainer, evaluate, save adapter and report."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    set_seed(cfg.seed)
    train_pairs, eval_pairs = load_preference_splits(cfg, cfg.seed)
    check_adapter_flags(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code, padding_side="left")
    train_pairs = fitting_pairs(tokenizer, train_pairs, cfg, cfg.data)
    eval_pairs = fitting_pairs(tokenizer, eval_pairs, cfg, cfg.eval_data or cfg.data) if eval_pairs else []
    logger.info("DPO: %d training pairs, %d held out", len(train_pairs), len(eval_pairs))
    model, peft_config = build_policy(cfg)
    dtype = pick_dtype(cfg.dtype, pick_device(cfg.device))
    args = trainer_arguments(cfg, TRLDPOConfig, bool(eval_pairs), dtype, beta=cfg.beta, loss_type=[cfg.loss_type],
                             label_smoothing=cfg.label_smoothing, max_length=cfg.max_length)  # fmt: skip
    collector = LogCollector()
    marks = begin_run(cfg, collector)
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(to_trl_rows(tokenizer, train_pairs, cfg)),
        eval_dataset=Dataset.from_list(to_trl_rows(tokenizer, eval_pairs, cfg)) if eval_pairs else None,
        processing_class=tokenizer, peft_config=peft_config, callbacks=[collector, marks],
    )  # fmt: skip
    marks.trainer = trainer
    output = marks.finish(trainer.train(resume_from_checkpoint=marks.resume_argument()), collector.records)
    evaluated = trainer.evaluate() if eval_pairs else None
    accuracy, margin = held_out_metrics(collector.records, evaluated)
    if trainer.is_world_process_zero():
        save_outputs(trainer.model, tokenizer, cfg, cfg.output_dir)
        summary = {"train_loss": output.training_loss, "steps": output.global_step, "eval_accuracy": accuracy,
                   "eval_margin": margin, "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs)}  # fmt: skip
        write_training_report(collector.records, cfg.output_dir, {"summary": summary})
    return DPOResult(
        Path(cfg.output_dir), output.training_loss, output.global_step, accuracy, margin, collector.records
    )
