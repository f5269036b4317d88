"""One runner for TRL's offline preference trainers: DPO, ORPO, SimPO / CPO and KTO share everything but the loss.

    llm-tuning dpo   --data pairs.jsonl    --sft_adapter weights/sft --output_dir weights/dpo
    llm-tuning orpo  --data pairs.jsonl    --sft_adapter weights/sft --output_dir weights/orpo
    llm-tuning simpo --data pairs.jsonl    --sft_adapter weights/sft --output_dir weights/simpo
    llm-tuning kto   --data feedback.jsonl --sft_adapter weights/sft --output_dir weights/kto

A method is a `PreferenceMethod`: its TRL config and trainer classes, the config fields it sets, whether
the trainer takes a reference model and whether its rows are unpaired. The runner reads and splits the
rows (rlhf/data.py errors), drops the ones longer than --max_length, builds the LoRA policy (a new
adapter, or --sft_adapter continued), trains, saves the adapter through a staging folder, and measures
every method the same way on the held-out rows (rlhf/preference_eval.py): against the model it started
from, does the policy now favour the chosen reply (or, for KTO rows, move the way the label says)?
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.data.template import prompt_text, with_system
from llm_tuning.models.load import load_model, load_tokenizer, pick_device, pick_dtype
from llm_tuning.models.lora import attach_lora, lora_config
from llm_tuning.reporting import LogCollector, final_eval, write_training_report
from llm_tuning.rlhf.common import (
    begin_run,
    check_adapter_flags,
    keep_short,
    load_preference_splits,
    save_outputs,
)
from llm_tuning.rlhf.data import FeedbackRow, PreferencePair, encode_reply, read_feedback, render_prompt
from llm_tuning.rlhf.preference_eval import held_out_scores
from llm_tuning.training_options import trainer_arguments

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferenceMethod:
    name: str  # shown in logs and the summary: "DPO"
    trl_module: str  # where TRL keeps its config and trainer classes: "trl", "trl.experimental.orpo"
    trl_names: tuple[
        str, str
    ]  # (config class, trainer class), imported when a run starts (trl is slow to import)
    arguments: Callable[
        [Any], dict[str, Any]
    ]  # the method's own TRL config fields, from the command's config
    reference: bool = (
        True  # the trainer takes ref_model (None: the base, or TRL's frozen copy of the adapter)
    )
    unpaired: bool = False  # KTO: {prompt, completion, label} rows instead of pairs


@dataclass
class PreferenceResult:
    method: str
    output_dir: Path
    train_loss: float
    steps: int
    accuracy: float | None  # TRL's held-out rewards/accuracies, where the trainer logs one
    margin: float | None  # TRL's held-out rewards/margins
    held_out: dict[str, float] = field(default_factory=dict)  # the same measure for every method
    log: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.accuracy is not None:
            parts.append(f"held-out reward accuracy {self.accuracy:.1%}, mean margin {self.margin:+.3f}")
        if "preference_accuracy" in self.held_out:
            parts.append(f"prefers the chosen reply over its start on {self.held_out['preference_accuracy']:.1%} "
                         f"of {self.held_out['rows']:.0f} held-out pairs (log-ratio margin "
                         f"{self.held_out['logratio_margin']:+.3f})")  # fmt: skip
        if "label_agreement" in self.held_out:
            parts.append(f"moves the way the label says on {self.held_out['label_agreement']:.1%} of "
                         f"{self.held_out['rows']:.0f} held-out rows")  # fmt: skip
        held = "; ".join(parts) or "no held-out rows"
        return (f"{self.method} adapter saved to {self.output_dir}: {held}; train loss {self.train_loss:.4f} "
                f"over {self.steps} steps")  # fmt: skip


Row = PreferencePair | FeedbackRow


def to_trl_rows(tokenizer: Any, rows: list[Row], cfg: Any) -> list[dict[str, Any]]:
    """TRL's conversational rows (TRL applies the chat template itself), or plain text with --template none."""
    plain = cfg.template == "none"

    def reply(text: str) -> str | list[dict[str, str]]:
        return text if plain else [{"role": "assistant", "content": text}]

    out = []
    for row in rows:
        prompt = (
            prompt_text(tokenizer, row.prompt, "none")
            if plain
            else with_system(row.prompt, cfg.system_prompt)
        )
        if isinstance(row, FeedbackRow):
            out.append({"prompt": prompt, "completion": reply(row.completion), "label": row.label})
        else:
            out.append({"prompt": prompt, "chosen": reply(row.chosen), "rejected": reply(row.rejected)})
    return out


def replies(row: Row) -> tuple[str, ...]:
    return (row.completion,) if isinstance(row, FeedbackRow) else (row.chosen, row.rejected)


def fitting_rows(tokenizer: Any, rows: list[Row], cfg: Any, path: str) -> list[Row]:
    """The rows whose prompt + reply fit --max_length tokens, as the flag says (TRL would cut the others)."""
    encoded = []
    for row in rows:
        prompt = render_prompt(tokenizer, row.prompt, cfg.template, cfg.system_prompt)
        ids = [encode_reply(tokenizer, prompt, text) for text in replies(row)]
        encoded.append((ids[0], ids[-1]))
    what = "row" if rows and isinstance(rows[0], FeedbackRow) else "pair"
    return [rows[i] for i in keep_short(encoded, cfg.max_length, path, what)]


def build_policy(cfg: Any) -> tuple[Any, Any]:
    """(model, peft_config): a PeftModel from --sft_adapter (TRL copies it as a reference), else base + config."""
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, for_training=True)
    if cfg.sft_adapter:
        return attach_lora(model, None, cfg.sft_adapter, "--sft_adapter"), None
    return model, lora_config(model, cfg)


def trl_metrics(
    records: list[dict[str, Any]], evaluated: dict[str, float] | None
) -> tuple[float | None, float | None]:
    """TRL's held-out rewards/accuracies and margins (the last training ones when nothing was held out)."""
    if evaluated and "eval_rewards/accuracies" in evaluated:
        return evaluated["eval_rewards/accuracies"], evaluated.get("eval_rewards/margins")
    last = next((r for r in reversed(records) if "rewards/accuracies" in r), None)
    return (None, None) if last is None else (last["rewards/accuracies"], last.get("rewards/margins"))


def load_rows(cfg: Any, method: PreferenceMethod, tokenizer: Any) -> tuple[list[Row], list[Row]]:
    """(training rows, held-out rows), read, split and cut to --max_length."""
    reader = read_feedback if method.unpaired else None
    train_rows, eval_rows = load_preference_splits(cfg, cfg.seed, reader)
    train_rows = fitting_rows(tokenizer, train_rows, cfg, cfg.data)
    eval_rows = fitting_rows(tokenizer, eval_rows, cfg, cfg.eval_data or cfg.data) if eval_rows else []
    logger.info("%s: %d training rows, %d held out", method.name, len(train_rows), len(eval_rows))
    if method.unpaired and len({r.label for r in train_rows}) == 1:
        logger.warning("%s: every training row is labelled %s: KTO learns from both good and bad replies; add "
                       "rows of the other kind", cfg.data, str(train_rows[0].label).lower())  # fmt: skip
    return train_rows, eval_rows


def trl_classes(method: PreferenceMethod) -> tuple[type, type]:
    """TRL's config and trainer classes; an experimental module's import warning is silenced (the commands'
    help says which trainers are experimental in TRL)."""
    if method.trl_module.startswith("trl.experimental"):
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    module = importlib.import_module(method.trl_module)
    return getattr(module, method.trl_names[0]), getattr(module, method.trl_names[1])


def make_trainer(
    cfg: Any, method: PreferenceMethod, tokenizer: Any, rows: tuple[list, list], callbacks: list
) -> Any:
    from datasets import Dataset

    config_class, trainer_class = trl_classes(method)
    train_rows, eval_rows = rows
    model, peft_config = build_policy(cfg)
    dtype = pick_dtype(cfg.dtype, pick_device(cfg.device))
    args = trainer_arguments(cfg, config_class, bool(eval_rows), dtype, max_length=cfg.max_length,
                             **method.arguments(cfg))  # fmt: skip
    datasets = {
        "train_dataset": Dataset.from_list(to_trl_rows(tokenizer, train_rows, cfg)),
        "eval_dataset": Dataset.from_list(to_trl_rows(tokenizer, eval_rows, cfg)) if eval_rows else None,
    }
    extra = {"ref_model": None} if method.reference else {}
    return trainer_class(model=model, args=args, processing_class=tokenizer, peft_config=peft_config,
                         callbacks=callbacks, **datasets, **extra)  # fmt: skip


def run_preference(cfg: Any, method: PreferenceMethod) -> PreferenceResult:
    """Read the rows, train with the method's TRL trainer, measure on the held-out rows, save adapter and report."""
    from transformers import set_seed

    set_seed(cfg.seed)
    check_adapter_flags(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code, padding_side="left")
    train_rows, eval_rows = load_rows(cfg, method, tokenizer)
    collector = LogCollector()
    marks = begin_run(cfg, collector)
    trainer = make_trainer(cfg, method, tokenizer, (train_rows, eval_rows), [collector, marks])
    marks.trainer = trainer
    output = marks.finish(trainer.train(resume_from_checkpoint=marks.resume_argument()), collector.records)
    evaluated = final_eval(trainer, output.global_step)
    if eval_rows and evaluated is None:
        evaluated = trainer.evaluate()
    accuracy, margin = trl_metrics(collector.records, evaluated)
    if trainer.is_world_process_zero():
        save_outputs(trainer.model, tokenizer, cfg, cfg.output_dir)
    held_out = held_out_scores(trainer.model, tokenizer, eval_rows, cfg) if eval_rows else {}
    if trainer.is_world_process_zero():
        summary = {"method": method.name, "train_loss": output.training_loss, "steps": output.global_step,
                   "eval_accuracy": accuracy, "eval_margin": margin, "held_out": held_out,
                   "train_pairs": len(train_rows), "eval_pairs": len(eval_rows)}  # fmt: skip
        write_training_report(collector.records, cfg.output_dir, {"summary": summary})
    return PreferenceResult(method.name, Path(cfg.output_dir), output.training_loss, output.global_step,
                            accuracy, margin, held_out, collector.records)  # fmt: skip
