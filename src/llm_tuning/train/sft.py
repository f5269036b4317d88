"""LoRA supervised fine-tuning for any causal LM, on Hugging Face Trainer + PEFT.

    llm-tuning train --tokenized_dataset simple_math_4op --lora_rank 8 --per_device_train_batch_size 10 \
        --gradient_accumulation_steps 1 --max_steps 100000 --save_steps 200 --save_total_limit 2 \
        --learning_rate 1e-4 --fp16 --logging_steps 50 --output_dir weights/simple_math_4op

Also runs straight on a data file (`--data train.jsonl`, tokenized through the same cache), from a YAML
recipe, and unchanged under `torchrun --nproc_per_node N` / `accelerate launch` (DDP, DeepSpeed, FSDP:
configs/accelerate/): rank 0 tokenizes while the others wait, each rank trains on its shard, rank 0
logs and writes the adapter. The output folder: adapter_model.safetensors + adapter_config.json (plain
PEFT loads it), the tokenizer, llm_tuning_config.yaml, runs/ (TensorBoard), training_log.json,
training_curves.png.

Speed (bench/README.md): rows are packed padding-free (`--packing`) and the vocabulary logits are
computed only where the loss is taken (`--lean_logits`); both are checked against the plain padded
loss on the model before training (train/speed.py). `--load_in_4bit` trains QLoRA on a GPU.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning import checkpoints
from llm_tuning.config import (
    ConfigError,
    DataOptions,
    LoraOptions,
    ModelOptions,
    check_choice,
    option,
    save_config,
    validate_groups,
)
from llm_tuning.data.collate import PadCollator
from llm_tuning.data.encode import mark_trained_span
from llm_tuning.data.mixing import DataSource, mix_datasets, parse_data_source
from llm_tuning.data.packing import PackedCollator
from llm_tuning.data.read import DataError
from llm_tuning.data.tokenize import MANIFEST, TOKENIZED_DIR, TokenizeConfig, read_manifest
from llm_tuning.data.tokenize import run as tokenize
from llm_tuning.files import discard_staged, install_files, staging_folder, staging_path
from llm_tuning.models.adapter_check import record_base_model, remember_base_fingerprint
from llm_tuning.models.adapters import MIX_METHODS, mixed_trainable_adapter, needs_mix, parse_adapter_spec
from llm_tuning.models.load import load_model, load_tokenizer, pick_device, pick_dtype
from llm_tuning.models.lora import attach_lora, lora_config
from llm_tuning.reporting import LogCollector, final_eval, write_training_report
from llm_tuning.train.finite import FiniteGuard
from llm_tuning.train.generation_eval import check_eval_selection, generation_metrics
from llm_tuning.train.loss import LeanLossTrainer
from llm_tuning.train.packed_attention import use_packed_attention
from llm_tuning.train.quantized import check_4bit, load_4bit_model
from llm_tuning.train.replay import write_replay_file
from llm_tuning.train.sharding import check_launch, cpu_process_flags, use_fsdp_on_cpu
from llm_tuning.train.speed import check_levers, set_mmap_threshold, set_threads, use_fast_dropout
from llm_tuning.train.stop import StopOnSigterm
from llm_tuning.training_options import TrainerOptions, trainer_arguments

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig(TrainerOptions, ModelOptions, DataOptions, LoraOptions):
    """LoRA supervised fine-tuning on a tokenized folder or a data file."""

    tokenized_dataset: str | None = option(None, "folder from `llm-tuning tokenize` (or its --save_name)")
    data: list[str] | str | None = option(None, "a JSON/JSONL/CSV file to tokenize (cached) and train on; repeat "
                                          "to mix files, FILE:RATIO to sample one to that share of the mix",
                                          aliases=("input_file", "data_path", "train_file"))  # fmt: skip
    replay: int = option(
        0, "the base model answers N general prompts first; its answers are mixed in (replay)"
    )
    replay_prompts: str | None = option(
        None, "prompts for --replay (default: the built-in general questions)"
    )
    eval_data: str | None = option(None, "a separate evaluation file (default: split --eval_split off)")
    eval_split: float = option(0.0, "share of rows held out for evaluation (0 = none)")
    eval_metrics: str = option("", "generation metrics at each evaluation, comma-separated: exact_match, contains, "
                                   "token_f1, rouge_l, bleu (train/generation_eval.py)")  # fmt: skip
    eval_generate_rows: int = option(32, "eval rows answered for --eval_metrics")
    eval_max_new_tokens: int = option(64, "longest reply generated for --eval_metrics")
    metric_for_best_model: str | None = option(
        None, "loss, or one of --eval_metrics: the best checkpoint by it"
    )
    load_best_model_at_end: bool = option(
        False, "save the best checkpoint's adapter (by --metric_for_best_model)"
    )
    previous_lora_weights: list[str] = option([], "continue an earlier adapter; repeat as dir:weight to start "
                                              "from a weighted mix of several (see --mix_method)")  # fmt: skip
    mix_method: str = option(
        "cat", "how several --previous_lora_weights combine: cat (exact), linear, svd, ..."
    )
    mix_density: float | None = option(None, "share of weights kept by ties / dare mixing")
    group_by_length: bool = option(False, "batch rows of similar length together (less padding)")
    packing: bool = option(True, "padding-free batches: rows end to end, no attention across rows")
    lean_logits: bool = option(True, "compute the vocabulary logits only at trained positions (less memory)")
    lean_mlp: bool = option(
        True, "gated MLPs keep 2 of their 4 activations for backward, recomputing the rest (less memory)"
    )
    row_attention: bool = option(
        True, "with --packing on an sdpa model: attention row by row, not one block mask"
    )
    fast_dropout: bool = option(True, "draw the LoRA dropout masks with a faster sampler (same distribution)")
    torch_threads: int = option(0, "CPU threads for torch (0: torch's default, one per core)")
    mmap_threshold_mb: int = option(
        0,
        "CPU (Linux): freed tensors of this many MiB or more go back to the OS at once; 4: -10% memory, "
        "-12% speed (0: glibc's default)",
    )
    load_in_4bit: bool = option(False, "QLoRA: 4-bit NF4 base model through bitsandbytes (CUDA GPUs only)")
    remove_unused_columns: bool = option(False, "accepted for the original's commands; has no effect")

    def __post_init__(self) -> None:
        validate_groups(self)
        if isinstance(self.previous_lora_weights, str):  # one folder, as the original and recipes give it
            self.previous_lora_weights = [self.previous_lora_weights]
        if isinstance(self.data, list) and len(self.data) == 1:  # one file stays a plain value, as before
            self.data = self.data[0]
        if self.replay < 0 or (self.replay and self.tokenized_dataset):
            raise ConfigError(f"--replay must be >= 0 and goes with --data files, got {self.replay}")
        if not self.tokenized_dataset and not self.data:
            raise ConfigError("give the training data: --tokenized_dataset FOLDER or --data FILE")
        if self.tokenized_dataset and self.data:
            raise ConfigError("give either --tokenized_dataset or --data, not both")
        if not 0 <= self.eval_split < 1:  # (a NaN fails this too)
            raise ConfigError(f"--eval_split must be in [0, 1), got {self.eval_split}")
        check_choice("mix_method", self.mix_method, MIX_METHODS)
        check_eval_selection(self)
        if self.torch_threads < 0:
            raise ConfigError(f"--torch_threads must be >= 0 (0: torch's default), got {self.torch_threads}")
        if self.mmap_threshold_mb < 0:
            raise ConfigError(
                f"--mmap_threshold_mb must be >= 0 (0: glibc's default), got {self.mmap_threshold_mb}"
            )


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


def check_tokenized_for(folder: Path, model: str) -> None:
    """Warn when a tokenized folder was made with another model's tokenizer (its ids would be wrong)."""
    manifest = read_manifest(folder)
    if manifest and manifest.get("model") not in (None, model) and Path(manifest["model"]) != Path(model):
        logger.warning("%s was tokenized for model %r, but --model is %r: re-tokenize unless they share a "
                       "tokenizer", folder, manifest["model"], model)  # fmt: skip


def tokenized_from_file(cfg: TrainConfig, path: str) -> Path:
    tok_cfg = TokenizeConfig(
        input_file=path, model=cfg.model, prompt_key=cfg.prompt_key, target_key=cfg.target_key,
        max_seq_length=cfg.max_seq_length, skip_overlength=cfg.skip_overlength, template=cfg.template,
        prompt_loss=cfg.prompt_loss, system_prompt=cfg.system_prompt, trust_remote_code=cfg.trust_remote_code,
    )  # fmt: skip
    return tokenize(tok_cfg).path


def on_cpu(cfg: TrainConfig) -> bool:
    return pick_device(cfg.device).type == "cpu"


def data_sources(cfg: TrainConfig) -> list[DataSource] | None:
    """The --data files to mix (and the replay file, written here), or None for one file used whole."""
    specs = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data or [])
    sources = [parse_data_source(s) for s in specs]
    if cfg.replay:
        sources.append(DataSource(str(write_replay_file(cfg))))
    if not sources or (len(sources) == 1 and sources[0].ratio is None and not cfg.replay):
        return None
    return sources


def load_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """(train, eval or None); under torchrun the main process tokenizes first, the others reuse it."""
    from accelerate import PartialState
    from datasets import load_from_disk

    # cpu=True: on a machine without GPUs accelerate only sees torchrun's processes (gloo) when told so
    with PartialState(cpu=on_cpu(cfg)).main_process_first():
        sources = data_sources(cfg)
        if sources is None:
            folder = (
                find_tokenized(cfg.tokenized_dataset)
                if cfg.tokenized_dataset
                else tokenized_from_file(cfg, cfg.data)
            )
        else:
            folders = [tokenized_from_file(cfg, s.path) for s in sources]
        eval_folder = tokenized_from_file(cfg, cfg.eval_data) if cfg.eval_data else None
    if sources is None:
        check_tokenized_for(folder, cfg.model)
        train = load_from_disk(str(folder))
    else:
        train, _ = mix_datasets([load_from_disk(str(f)) for f in folders], sources, cfg.seed)
    evaluation = load_from_disk(str(eval_folder)) if eval_folder else None
    if evaluation is None and cfg.eval_split > 0:
        check_eval_split(len(train), cfg.eval_split, cfg.data or cfg.tokenized_dataset)
        parts = train.train_test_split(test_size=cfg.eval_split, seed=cfg.seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def check_eval_split(rows: int, split: float, source: str) -> None:
    """`datasets` holds out ceil(rows x split) rows: at least one must be left to train on."""
    held_out = math.ceil(rows * split)
    if rows - held_out < 1:
        raise DataError(source, None, f"has {rows} row(s) after tokenizing: too few to hold out --eval_split "
                        f"{split} and still train", hint="add rows, lower --eval_split or pass --eval_data FILE")  # fmt: skip


def training_arguments(cfg: TrainConfig, has_eval: bool, dtype: Any, packing: bool = False) -> Any:
    """transformers TrainingArguments: the shared trainer options plus what supervised training adds."""
    from transformers import TrainingArguments

    specific: dict[str, Any] = dict(
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        # packed batches have no padding (and no attention_mask to count it by)
        include_num_input_tokens_seen="all" if packing else "non_padding",
        prediction_loss_only=True,  # no metrics: do not keep every evaluation logit in memory
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every step
        # without use_cpu, torchrun's CPU processes would each train alone on all the data
        **cpu_process_flags(on_cpu(cfg)),
        logging_nan_inf_filter=False,  # a NaN loss must show (train/finite.py stops on it), not be averaged away
    )  # fmt: skip
    if has_eval and (cfg.metric_for_best_model or cfg.load_best_model_at_end):
        from llm_tuning.eval.metrics import HIGHER_IS_BETTER

        best = cfg.metric_for_best_model or "loss"
        specific.update(metric_for_best_model=best, greater_is_better=HIGHER_IS_BETTER.get(best, False),
                        load_best_model_at_end=cfg.load_best_model_at_end)  # fmt: skip
    return trainer_arguments(cfg, TrainingArguments, has_eval, dtype, **specific)


def build_model(cfg: TrainConfig) -> Any:
    if cfg.load_in_4bit:
        model = load_4bit_model(
            cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, cfg.gradient_checkpointing
        )
    else:
        model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, for_training=True)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: let checkpointed blocks see a grad input
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.previous_lora_weights)]
    if needs_mix(specs):
        return mixed_trainable_adapter(model, specs, cfg.mix_method, cfg.mix_density)
    if specs:  # continue one earlier adapter, with its own LoRA config
        return attach_lora(model, None, specs[0].path)
    return attach_lora(model, lora_config(model, cfg), None)


def save_adapter(trainer: Any, tokenizer: Any, cfg: TrainConfig) -> None:
    """Adapter + tokenizer + config into output_dir, through a temp folder (never half-written).

    Every rank calls it: under DeepSpeed ZeRO-3 / FSDP the ranks gather the sharded weights together;
    rank 0 alone writes.
    """
    out = Path(cfg.output_dir)
    tmp = staging_path(out, "adapter")
    main = trainer.is_world_process_zero()
    if main:
        staging_folder(out, "adapter")
    trainer.save_model(str(tmp))
    if main:
        try:
            tokenizer.save_pretrained(tmp)
            save_config(cfg, tmp)
            record_base_model(tmp, cfg.model, trainer.model)
            (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle of the arguments: not ours to ship
            install_files(tmp, out)  # all at once: never new weights beside an old adapter_config.json
        finally:
            discard_staged(tmp)


def checkpointing(cfg: TrainConfig) -> bool:
    """Whether activations are recomputed: --gradient_checkpointing, or FSDP's, set in an accelerate config.

    The lean MLP is left off then: its saved-tensor hooks would keep each MLP's inputs through the blocks
    that checkpointing recomputes anyway.
    """
    return cfg.gradient_checkpointing or os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() == "true"


def make_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, data: tuple[Any, Any], callbacks: list) -> Any:
    """The Trainer with the levers that passed their check on this model (train/speed.py)."""
    from transformers import Trainer

    row_attention = cfg.packing and cfg.row_attention and use_packed_attention(model)
    if cfg.fast_dropout:
        use_fast_dropout(model)
    levers = check_levers(model, cfg.packing, cfg.lean_logits, cfg.lean_mlp and not checkpointing(cfg))
    logger.info("padding-free packing: %s%s; logits only at trained positions: %s; lean MLP: %s", levers.packing,
                " (attention row by row)" if levers.packing and row_attention else "", levers.lean_logits,
                levers.lean_mlp)  # fmt: skip
    train_set, eval_set = data
    dtype = pick_dtype(cfg.dtype, pick_device(cfg.device))
    collator = PackedCollator() if levers.packing else PadCollator(tokenizer.pad_token_id)
    trainer_class = LeanLossTrainer if levers.lean_logits else Trainer
    trainer = trainer_class(
        model=model, args=training_arguments(cfg, eval_set is not None, dtype, levers.packing),
        train_dataset=train_set, eval_dataset=eval_set, data_collator=collator, callbacks=callbacks,
    )  # fmt: skip
    use_fsdp_on_cpu(trainer)  # accelerate would silently run an FSDP launch on CPU processes as DDP
    return trainer


def resume_point(cfg: TrainConfig, data: list, collector: LogCollector) -> checkpoints.CheckpointMarks:
    """Check --output_dir and --resume_from_checkpoint (checkpoints.py): rank 0 first, then the others."""
    from accelerate import PartialState

    state = PartialState(cpu=on_cpu(cfg))
    with state.main_process_first():
        return checkpoints.begin(cfg, data, collector, main=state.is_main_process)


def run(cfg: TrainConfig, callbacks: list | None = None) -> TrainResult:
    """Set up data and model, train, save the adapter and its report; `callbacks` are extra TrainerCallbacks."""
    from transformers import set_seed

    if cfg.load_in_4bit:
        check_4bit(cfg.device)
    check_launch(on_cpu(cfg))
    set_threads(cfg.torch_threads)
    if on_cpu(cfg):
        set_mmap_threshold(cfg.mmap_threshold_mb)
    set_seed(cfg.seed)
    train_set, eval_set = load_datasets(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    first = train_set[0]
    logger.info(
        "sample 0, trained tokens in [[ ]]:\n%s",
        mark_trained_span(tokenizer, first["input_ids"], first["labels"]),
    )
    collector = LogCollector()
    marks = resume_point(cfg, [d._fingerprint for d in (train_set, eval_set) if d is not None], collector)
    model = build_model(cfg)
    remember_base_fingerprint(model)  # before the Trainer shards it
    guard = FiniteGuard(model, cfg.fp16)
    generation = generation_metrics(cfg, tokenizer, eval_set)
    trainer = make_trainer(
        cfg,
        model,
        tokenizer,
        (train_set, eval_set),
        # StopOnSigterm first: the checkpoint marks then see the save it asks for
        [StopOnSigterm(), collector, marks, guard, *generation, *(callbacks or [])],
    )
    marks.trainer = trainer
    for callback in generation:
        callback.trainer = trainer
    output = marks.finish(trainer.train(resume_from_checkpoint=marks.resume_argument()), collector.records)
    evaluated = final_eval(trainer, output.global_step)
    if eval_set is not None and evaluated is None:
        evaluated = trainer.evaluate()
    eval_loss = evaluated["eval_loss"] if eval_set is not None else None
    tokens = int(trainer.state.num_input_tokens_seen)
    save_adapter(trainer, tokenizer, cfg)
    if trainer.is_world_process_zero():
        summary = {"train_loss": output.training_loss, "steps": output.global_step, "eval_loss": eval_loss,
                   "runtime_s": output.metrics.get("train_runtime"), "input_tokens": tokens}  # fmt: skip
        write_training_report(collector.records, cfg.output_dir, {"summary": summary})
        logger.info("adapter saved to %s (train loss %.4f over %d steps)", cfg.output_dir, output.training_loss,
                    output.global_step)  # fmt: skip
    trainer.accelerator.wait_for_everyone()  # the files exist before any rank returns
    return TrainResult(Path(cfg.output_dir), output.training_loss, output.global_step,
                       output.metrics.get("train_runtime", 0.0), tokens, eval_loss, collector.records)  # fmt: skip
