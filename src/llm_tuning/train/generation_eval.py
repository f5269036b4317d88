"""Generation metrics during training: at each evaluation, the model answers the first rows of the eval set
and its replies are scored (eval/metrics.py), next to the eval loss.

    llm-tuning train --data train.jsonl --eval_split 0.1 --eval_steps 50 --eval_metrics rouge_l,exact_match \
        --metric_for_best_model rouge_l --load_best_model_at_end

The scores are logged as eval_<metric> (TensorBoard, training_log.json, training_curves.png) and added to
the evaluation's metrics, so the Trainer can keep the best checkpoint by one of them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainerCallback

from llm_tuning.config import ConfigError
from llm_tuning.data.encode import IGNORE_INDEX
from llm_tuning.eval.metrics import GENERATION_METRICS, score_rows
from llm_tuning.models.generate import GenerationOptions, generate_all

logger = logging.getLogger(__name__)


def prompts_and_targets(tokenizer: Any, dataset: Any, rows: int) -> tuple[list[str], list[str]]:
    """Each tokenized row's prompt (the tokens before the first trained one, as text) and target (the trained
    tokens, as text), for the first `rows` rows."""
    prompts, targets = [], []
    for row in dataset.select(range(min(rows, len(dataset)))):
        labels = row["labels"]
        start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        prompts.append(tokenizer.decode(row["input_ids"][:start]))
        trained = [t for t in labels if t != IGNORE_INDEX]
        targets.append(tokenizer.decode(trained, skip_special_tokens=True).strip())
    return prompts, targets


class GenerationMetrics(TrainerCallback):
    """Adds eval_<metric> for each generation metric to every evaluation (set `.trainer` before training)."""

    def __init__(self, tokenizer: Any, dataset: Any, metrics: list[str], rows: int = 32,
                 max_new_tokens: int = 64, batch_size: int = 8) -> None:  # fmt: skip
        self.tokenizer, self.metrics, self.batch_size = tokenizer, metrics, batch_size
        self.prompts, self.targets = prompts_and_targets(tokenizer, dataset, rows)
        self.options = GenerationOptions(max_new_tokens=max_new_tokens)
        self.trainer: Any = None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, model: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        if model is None or metrics is None or not self.prompts:
            return
        was_training = model.training
        model.eval()
        try:  # training turns the KV cache off; generation wants it
            results, seconds = generate_all(model, self.tokenizer, self.prompts, self.options, self.batch_size,
                                            use_cache=True)  # fmt: skip
        finally:
            model.train(was_training)
        scores = score_rows(self.metrics, [r.text for r in results], self.targets).overall
        new = {f"eval_{name}": round(value, 4) for name, value in scores.items()}
        metrics.update(new)
        logger.info("step %d: %s (%d replies in %.1f s)", state.global_step, new, len(results), seconds)
        if self.trainer is not None:
            self.trainer.log(new)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def check_eval_selection(cfg: Any) -> None:
    """--eval_metrics / --metric_for_best_model / --load_best_model_at_end need an eval set and fit together."""
    names = [m.strip() for m in cfg.eval_metrics.split(",") if m.strip()]
    unknown = [m for m in names if m not in GENERATION_METRICS]
    if unknown:
        raise ConfigError(
            f"--eval_metrics: unknown metric {unknown[0]!r}; choose from {', '.join(GENERATION_METRICS)}"
        )
    wanted = bool(names or cfg.metric_for_best_model or cfg.load_best_model_at_end)
    if wanted and not (cfg.eval_data or cfg.eval_split > 0):
        raise ConfigError("--eval_metrics / --metric_for_best_model / --load_best_model_at_end need an eval set: "
                          "--eval_data FILE or --eval_split 0.1")  # fmt: skip
    best = cfg.metric_for_best_model
    if best is not None and best not in ("loss", *names):
        raise ConfigError(
            f"--metric_for_best_model {best!r}: choose loss or one of --eval_metrics ({', '.join(names) or 'none given'})"
        )
    every = cfg.eval_steps or cfg.logging_steps
    if cfg.load_best_model_at_end and cfg.save_steps % every:
        raise ConfigError(f"--load_best_model_at_end keeps a saved checkpoint: --save_steps ({cfg.save_steps}) must be "
                          f"a multiple of --eval_steps ({every})")  # fmt: skip


def generation_metrics(cfg: Any, tokenizer: Any, eval_set: Any) -> list:
    """The callback scoring generated replies at each evaluation, when --eval_metrics asks for it."""
    names = [m.strip() for m in cfg.eval_metrics.split(",") if m.strip()]
    if not names or eval_set is None:
        return []
    return [GenerationMetrics(tokenizer, eval_set, names, cfg.eval_generate_rows, cfg.eval_max_new_tokens,
                              cfg.per_device_eval_batch_size)]  # fmt: skip
