"""LoRA supervised fine-tuning for any causal LM, on Hugging Face Trainer + PEFT.

    llm-tuning train --tokenized_dataset simple_math_4op --lora_rank 8 --per_device_train_batch_size 10 \
        --gradient_accumulation_steps 1 --max_steps 100000 --save_steps 200 --save_total_limit 2 \
        --learning_rate 1e-4 --fp16 --logging_steps 50 --output_dir weights/simple_math_4op

Also runs straight on a data file (`--data train.jsonl`, tokenized through the same cache), from a YAML
recipe, and under torchrun / accelerate launch (rank 0 tokenizes and saves; the others wait).
The output folder: adapter_model.safetensors + adapter_config.json (plain PEFT loads it), the
tokenizer, llm_tuning_config.yaml, runs/ (TensorBoard), training_log.json, training_curves.png.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_tuning.config import ConfigError, DataOptions, LoraOptions, ModelOptions, option, save_config, validate_groups
from llm_tuning.data.collate import PadCollator
from llm_tuning.data.encode import mark_trained_span
from llm_tuning.data.tokenize import TOKENIZED_DIR, MANIFEST, TokenizeConfig
from llm_tuning.data.tokenize import run as tokenize
from llm_tuning.models.load import load_model, load_tokenizer, mixed_precision_flags, pick_device, pick_dtype
from llm_tuning.models.lora import attach_lora, lora_config
from llm_tuning.reporting import LogCollector, write_training_report

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig(ModelOptions, DataOptions, LoraOptions):
    """LoRA supervised fine-tuning on a tokenized folder or a data file."""

    tokenized_dataset: str | None = option(None, "folder from `llm-tuning tokenize` (or its --save_name)")
    data: str | None = option(None, "a JSON/JSONL/CSV file to tokenize (cached) and train on",
                              aliases=("input_file", "data_path", "train_file"))  # fmt: skip
    eval_data: str | None = option(None, "a separate evaluation file (default: split --eval_split off)")
    eval_split: float = option(0.0, "share of rows held out for evaluation (0 = none)")
    eval_steps: int | None = option(None, "evaluate every N steps (default: at --logging_steps)")
    output_dir: str = option("weights/lora", "where the adapter, logs and checkpoints go")
    previous_lora_weights: str | None = option(None, "continue training an earlier adapter folder")
    resume_from_checkpoint: str | None = option(None, "a checkpoint folder, or 'latest' in --output_dir")
    per_device_train_batch_size: int = option(4, "rows per device per step", aliases=("batch_size",))
    per_device_eval_batch_size: int = option(8, "rows per device per evaluation step")
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
    fp16: bool = option(False, "fp16 mixed precision (GPU only; ignored on CPU)")
    bf16: bool = option(False, "bf16 mixed precision (GPU only; ignored on CPU)")
    gradient_checkpointing: bool = option(False, "recompute activations to save memory")
    group_by_length: bool = option(False, "batch rows of similar length together (less padding)")
    seed: int = option(42, "random seed for LoRA init, shuffling and dropout")
    report_to: str = option("tensorboard", "tensorboard, wandb, none, ...")
    remove_unused_columns: bool = option(False, "accepted for the original's commands; has no effect")
    dataloader_num_workers: int = option(0, "data-loading worker processes")
    extra_args: dict = option({}, "more transformers TrainingArguments, by name (YAML recipes)")

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.tokenized_dataset and not self.data:
            raise ConfigError("give the training data: --tokenized_dataset FOLDER or --data FILE")
        if self.tokenized_dataset and self.data:
            raise ConfigError("give either --tokenized_dataset or --data, not both")
        if not 0 <= self.eval_split < 1:
            raise ConfigError(f"--eval_split must be in [0, 1), got {self.eval_split}")
        if self.fp16 and self.bf16:
            raise ConfigError("choose one of --fp16 and --bf16")


@dataclass
class TrainResult:
    output_dir: Path
    train_loss: float
    steps: int
    runtime_s: float
    trained_tokens: int
    eval_loss: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


def find_tokenized(name: str) -> Path:
    """A tokenized folder by path, or by the original's bare --save_name under data/tokenized_data/."""
    for candidate in (Path(name), TOKENIZED_DIR / name):
        if (candidate / MANIFEST).is_file() or (candidate / "dataset_info.json").is_file():
            return candidate
    raise ConfigError(f"--tokenized_dataset {name!r}: no tokenized folder there or in {TOKENIZED_DIR}/; "
                      "run `llm-tuning tokenize --save_name NAME ...` first, or pass --data FILE")  # fmt: skip


def tokenized_from_file(cfg: TrainConfig, path: str) -> Path:
    tok_cfg = TokenizeConfig(
        input_file=path, model=cfg.model, prompt_key=cfg.prompt_key, target_key=cfg.target_key,
        max_seq_length=cfg.max_seq_length, skip_overlength=cfg.skip_overlength, template=cfg.template,
        prompt_loss=cfg.prompt_loss, system_prompt=cfg.system_prompt, trust_remote_code=cfg.trust_remote_code,
    )  # fmt: skip
    return tokenize(tok_cfg).path


def load_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """(train, eval or None); under torchrun the main process tokenizes first, the others reuse it."""
    from accelerate import PartialState
    from datasets import load_from_disk

    with PartialState().main_process_first():
        folder = find_tokenized(cfg.tokenized_dataset) if cfg.tokenized_dataset else tokenized_from_file(cfg, cfg.data)
        eval_folder = tokenized_from_file(cfg, cfg.eval_data) if cfg.eval_data else None
    train = load_from_disk(str(folder))
    evaluation = load_from_disk(str(eval_folder)) if eval_folder else None
    if evaluation is None and cfg.eval_split > 0:
        parts = train.train_test_split(test_size=cfg.eval_split, seed=cfg.seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def training_arguments(cfg: TrainConfig, has_eval: bool, dtype: Any) -> Any:
    from transformers import TrainingArguments

    eval_every = cfg.eval_steps or cfg.logging_steps
    return TrainingArguments(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps, eval_strategy="steps" if has_eval else "no", eval_steps=eval_every,
        activation_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed, report_to=cfg.report_to,
        remove_unused_columns=False, dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        include_num_input_tokens_seen="non_padding", disable_tqdm=False,
        **mixed_precision_flags(dtype, cfg.fp16, cfg.bf16), **cfg.extra_args,
    )  # fmt: skip


def build_model(cfg: TrainConfig) -> Any:
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, for_training=True)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: let checkpointed blocks see a grad input
    config = None if cfg.previous_lora_weights else lora_config(
        model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.use_dora, cfg.use_rslora)
    return attach_lora(model, config, cfg.previous_lora_weights)


def save_adapter(model: Any, tokenizer: Any, cfg: TrainConfig) -> None:
    """Adapter + tokenizer + config into output_dir, through a temp folder (never half-written)."""
    out = Path(cfg.output_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=out))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_config(cfg, tmp)
        for item in tmp.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(cfg: TrainConfig) -> TrainResult:
    """Set up data and model, train, save the adapter and its report."""
    from transformers import Trainer, set_seed

    set_seed(cfg.seed)
    train_set, eval_set = load_datasets(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    first = train_set[0]
    logger.info("sample 0, trained tokens in [[ ]]:\n%s", mark_trained_span(tokenizer, first["input_ids"], first["labels"]))
    model = build_model(cfg)
    dtype = pick_dtype(cfg.dtype, pick_device(cfg.device))
    collector = LogCollector()
    trainer = Trainer(
        model=model, args=training_arguments(cfg, eval_set is not None, dtype), train_dataset=train_set,
        eval_dataset=eval_set, data_collator=PadCollator(tokenizer.pad_token_id), callbacks=[collector],
    )  # fmt: skip
    resume = cfg.resume_from_checkpoint
    output = trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    eval_loss = trainer.evaluate()["eval_loss"] if eval_set is not None else None
    tokens = int(trainer.state.num_input_tokens_seen)
    if trainer.is_world_process_zero():
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        save_adapter(trainer.model, tokenizer, cfg)
        summary = {"train_loss": output.training_loss, "steps": output.global_step, "eval_loss": eval_loss,
                   "runtime_s": output.metrics.get("train_runtime"), "input_tokens": tokens}  # fmt: skip
        write_training_report(collector.records, cfg.output_dir, {"summary": summary})
        logger.info("adapter saved to %s (train loss %.4f over %d steps)", cfg.output_dir, output.training_loss,
                    output.global_step)  # fmt: skip
    return TrainResult(Path(cfg.output_dir), output.training_loss, output.global_step,
                       output.metrics.get("train_runtime", 0.0), tokens, eval_loss, collector.records)  # fmt: skip
