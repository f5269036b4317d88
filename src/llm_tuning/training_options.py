"""The trainer options every Trainer-based command shares (train, rm, dpo, orpo, kto, simpo, cpo), and one builder.

    llm-tuning train --data train.jsonl --max_steps 100 --learning_rate 2e-4 --per_device_train_batch_size 8
    llm-tuning dpo   --data pairs.jsonl --max_steps 30  --learning_rate 5e-5 --per_device_train_batch_size 8

`TrainerOptions` holds the flags (batch, steps, schedule, checkpoints, precision, logging); a command's
config inherits it and may give a field another default by declaring it again (as TRL's configs share
one base). `trainer_arguments` turns the group into transformers' TrainingArguments or any TRL config
(they extend it), adding the command's own arguments and the recipe's `extra_args`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llm_tuning.config import ConfigError, check_positive, check_training, option


@dataclass
class TrainerOptions:
    output_dir: str = option("weights/lora", "where the adapter, logs and checkpoints go")
    resume_from_checkpoint: str | None = option(None, "a checkpoint folder, or 'latest' in --output_dir")
    overwrite_output_dir: bool = option(False, "start a new run in an --output_dir holding another run's checkpoints "
                                        "(deletes those checkpoints, nothing else)")  # fmt: skip
    per_device_train_batch_size: int = option(4, "rows (pairs) per device per step", aliases=("batch_size",))
    per_device_eval_batch_size: int = option(8, "rows (pairs) per device per evaluation step")
    gradient_accumulation_steps: int = option(1, "steps whose gradients add up before an update")
    max_steps: int = option(-1, "optimizer updates to run (-1: use --num_train_epochs)")
    num_train_epochs: float = option(3.0, "passes over the data when --max_steps is -1")
    learning_rate: float = option(2e-4, "peak learning rate")
    lr_scheduler_type: str = option("cosine", "linear, cosine, constant, constant_with_warmup")
    warmup_steps: float = option(0.03, "warm-up: steps, or a fraction (< 1) of all steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    save_steps: int = option(500, "save a checkpoint every N steps")
    save_total_limit: int | None = option(2, "keep at most N checkpoints")
    logging_steps: int = option(10, "log loss and learning rate every N steps")
    eval_steps: int | None = option(None, "evaluate every N steps (default: at --logging_steps)")
    fp16: bool = option(False, "fp16 mixed precision (GPU only; ignored on CPU)")
    bf16: bool = option(False, "bf16 mixed precision (GPU only; ignored on CPU)")
    gradient_checkpointing: bool = option(False, "recompute activations to save memory (~30% slower)")
    seed: int = option(42, "random seed for LoRA init, shuffling and dropout")
    report_to: str = option("tensorboard", "tensorboard, wandb, none, ...")
    dataloader_num_workers: int = option(0, "data-loading worker processes")
    extra_args: dict = option(
        {}, "more transformers TrainingArguments (or TRL config fields), by name (YAML recipes)"
    )

    def __post_init__(self) -> None:
        check_training(self)
        check_positive("dataloader_num_workers", self.dataloader_num_workers, allow_zero=True)


def trainer_arguments(
    cfg: TrainerOptions, args_class: type, has_eval: bool, dtype: Any, **specific: Any
) -> Any:
    """`args_class` (TrainingArguments or a TRL config) from the group, the command's own `specific`
    arguments and --extra_args (last, so a recipe can set any field); a bad name or value is a ConfigError.

    fp32 on CPU whatever the class's default (TRL's configs default to bf16, 10-20x slower there).
    """
    import torch

    from llm_tuning.models.load import mixed_precision_flags

    kwargs = dict(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps, eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval_steps or cfg.logging_steps, seed=cfg.seed, report_to=cfg.report_to,
        # TRL's configs turn checkpointing on by default: both names, so the flag decides everywhere
        activation_checkpointing=cfg.gradient_checkpointing, gradient_checkpointing=cfg.gradient_checkpointing,
        remove_unused_columns=False, dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=False,
        **mixed_precision_flags(dtype, cfg.fp16, cfg.bf16),
    )  # fmt: skip
    kwargs.update(specific)
    known = {f.name for f in dataclasses.fields(args_class)}
    unknown = sorted(set(cfg.extra_args) - known)
    if unknown:
        library = "transformers" if args_class.__module__.startswith("transformers") else "TRL"
        raise ConfigError(f"extra_args: {', '.join(map(repr, unknown))} are not {library} {args_class.__name__} "
                          f"fields; see `{args_class.__name__}` in the {library} docs for the valid names")  # fmt: skip
    kwargs.update(cfg.extra_args)
    try:
        return args_class(**kwargs)
    except (ValueError, TypeError) as err:  # its own checks (report_to, eval_steps, ...) name the argument
        raise ConfigError(f"training arguments: {err}") from None
