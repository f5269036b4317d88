"""What the RLHF commands share: option groups, preference splits, adapter plumbing, saving outputs.

    llm-tuning rm  --data pairs.jsonl ...     (PreferenceTrainerOptions + PreferenceDataOptions)
    llm-tuning dpo --data pairs.jsonl ...     (the same groups)
    llm-tuning ppo / grpo ...                 (adapter helpers; their loop lives in rlhf/loop.py)

One base model carries every adapter of a run: the policy ("default"), a frozen copy of the starting
adapter ("reference") when the KL reference is the SFT model, and the reward model's LoRA ("reward");
`use_adapter` switches between them and `reference_context` gives the reference model's forward.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from llm_tuning.config import ConfigError, check_choice, check_positive, option, save_config
from llm_tuning.data.read import DataError
from llm_tuning.files import discard_staged, install_files, staging_folder
from llm_tuning.models.adapter_check import check_adapter_folder, record_base_model
from llm_tuning.rlhf.data import read_preferences
from llm_tuning.training_options import TrainerOptions

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
REFERENCE_KINDS = ("auto", "base", "initial")


# ---- option groups ---------------------------------------------------------------------------


@dataclass
class PreferenceDataOptions:
    rows_wanted: ClassVar[str] = "the preference pairs: --data FILE with prompt, chosen and rejected fields"

    data: str | None = option(
        None, "JSON/JSONL/CSV of {prompt, chosen, rejected} rows", aliases=("train_file",)
    )
    eval_data: str | None = option(
        None, "a separate file of held-out pairs (default: split --eval_split off)"
    )
    eval_split: float = option(0.1, "share of pairs held out for evaluation when --eval_data is not given")
    train_subset: int = option(-1, "use only the first N training pairs (-1: all)")
    eval_subset: int = option(-1, "use only the first N evaluation pairs (-1: all)")
    prompt_key: str = option("prompt", "field holding the prompt (or `messages` for chat rows)")
    max_length: int = option(
        512, "drop pairs whose prompt + reply is longer (tokens)", aliases=("max_seq_length",)
    )
    template: str = option("chat", "chat: the model's chat template; none: raw text")
    system_prompt: str | None = option(
        None, "system message for the chat template (default: the template's own)"
    )

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError(f"give {self.rows_wanted}")
        if not 0 <= self.eval_split < 1:
            raise ConfigError(f"--eval_split must be in [0, 1), got {self.eval_split}")
        check_choice("template", self.template, ("chat", "none"))
        check_positive("max_length", self.max_length)
        for name in ("train_subset", "eval_subset"):
            if getattr(self, name) == 0 or getattr(self, name) < -1:
                raise ConfigError(
                    f"--{name} must be a number of pairs >= 1, or -1 for all; got {getattr(self, name)}"
                )


@dataclass
class PreferenceTrainerOptions(TrainerOptions):
    """The shared trainer options (training_options.py) with the preference commands' defaults."""

    output_dir: str = option("weights/rlhf", "where the adapter, logs and checkpoints go")
    num_train_epochs: float = option(1.0, "passes over the pairs when --max_steps is -1")
    learning_rate: float = option(1e-4, "peak learning rate")
    lr_scheduler_type: str = option("linear", "linear, cosine, constant, constant_with_warmup")
    warmup_steps: float = option(0.0, "warm-up: steps, or a fraction (< 1) of all steps")
    sft_adapter: str | None = option(None, "start from this LoRA adapter (e.g. from `llm-tuning train`)",
                                     aliases=("sft_model_lora_path", "previous_lora_weights"))  # fmt: skip


def begin_run(cfg: Any, collector: Any) -> Any:
    """Check --output_dir / --resume_from_checkpoint for this run and its data (checkpoints.begin)."""
    from accelerate import PartialState

    from llm_tuning.checkpoints import begin, file_fingerprints

    data = file_fingerprints([cfg.data, getattr(cfg, "eval_data", None)])
    state = PartialState()
    with state.main_process_first():
        return begin(cfg, data, collector, main=state.is_main_process)


# ---- preference data -------------------------------------------------------------------------


def load_preference_splits(
    cfg: PreferenceDataOptions, seed: int = 42, reader: Callable[[str, str], list] | None = None
) -> tuple[list, list]:
    """(train rows, eval rows): --eval_data, or a seeded --eval_split of --data; subsets applied.

    `reader` reads a file's rows (default: preference pairs; KTO passes its feedback reader).
    """
    read = reader or read_preferences
    pairs = read(cfg.data, cfg.prompt_key)
    if cfg.eval_data:
        held_out = read(cfg.eval_data, cfg.prompt_key)
    elif cfg.eval_split > 0 and len(pairs) > 1:
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(len(pairs) * cfg.eval_split))
        held_out = [pairs[i] for i in sorted(order[:n_eval])]
        pairs = [pairs[i] for i in sorted(order[n_eval:])]
    else:
        held_out = []
    if cfg.train_subset > 0:
        pairs = pairs[: cfg.train_subset]
    if cfg.eval_subset > 0:
        held_out = held_out[: cfg.eval_subset]
    return pairs, held_out


def keep_short(
    encoded: list[tuple[list[int], list[int]]], max_length: int, path: str, what: str = "pair"
) -> list[int]:
    """Indices of pairs (or feedback rows) whose sides all fit in max_length tokens; a DataError if none does."""
    kept = [i for i, (a, b) in enumerate(encoded) if len(a) <= max_length and len(b) <= max_length]
    if encoded and len(kept) < len(encoded):
        logger.warning("%s: dropped %d of %d %ss longer than --max_length %d", path, len(encoded) - len(kept),
                       len(encoded), what, max_length)  # fmt: skip
    if encoded and not kept:
        raise DataError(path, None, f"every {what} is longer than --max_length {max_length} tokens",
                        hint="raise --max_length")  # fmt: skip
    return kept


# ---- adapters on one base --------------------------------------------------------------------


def read_adapter_weights(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an adapter folder (safetensors, or an older adapter_model.bin)."""
    folder = Path(adapter_dir)
    if (folder / ADAPTER_WEIGHTS).is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / ADAPTER_WEIGHTS))
    if (folder / "adapter_model.bin").is_file():
        return torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no {ADAPTER_WEIGHTS}; pass an adapter folder written by llm-tuning")


def lora_only(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an adapter's tensors into (LoRA weights, everything else: heads saved via modules_to_save)."""
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    return lora, {k: v for k, v in state.items() if k not in lora}


def add_adapter_from(
    peft_model: Any, adapter_dir: str | Path, name: str, trainable: bool = False, flag: str = "--sft_adapter"
) -> dict[str, torch.Tensor]:
    """Load a folder's LoRA weights as adapter `name` of `peft_model` (any task type); returns the other tensors.

    A reward model's LoRA (task SEQ_CLS) lands on a causal LM this way: its layers have the same names,
    and its score head comes back to the caller instead of being forced onto the LM.
    """
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

    from llm_tuning.models.adapter_check import check_adapter_fits

    check_adapter_fits(peft_model, adapter_dir, flag)
    lora, rest = lora_only(read_adapter_weights(adapter_dir))
    if name not in peft_model.peft_config:
        config = LoraConfig.from_pretrained(str(adapter_dir))
        config.task_type = peft_model.peft_config["default"].task_type
        config.modules_to_save, config.inference_mode = None, not trainable
        peft_model.add_adapter(name, config)
    # keep what the adapter has beyond LoRA (a new score head) as it is: only the LoRA weights are loaded
    kept = {
        k: v for k, v in get_peft_model_state_dict(peft_model, adapter_name=name).items() if ".lora_" not in k
    }
    result = set_peft_model_state_dict(peft_model, {**kept, **lora}, adapter_name=name)
    missing = [k for k in result.missing_keys if f".{name}." in k and ".lora_" in k]
    if missing:
        raise ConfigError(f"{flag} {adapter_dir}: adapter {adapter_dir} does not fit this model: {len(missing)} LoRA weights missing, "
                         f"e.g. {missing[0]}; was it trained on another base model?")  # fmt: skip
    for pname, param in peft_model.named_parameters():
        if f".{name}." in pname:
            param.requires_grad_(trainable)
    return rest


@contextlib.contextmanager
def use_adapter(peft_model: Any, name: str) -> Iterator[None]:
    """Run with adapter `name` active, then restore the active adapter and every requires_grad flag."""
    previous = peft_model.active_adapter
    flags = {n: p.requires_grad for n, p in peft_model.named_parameters()}
    peft_model.set_adapter(name)
    try:
        yield
    finally:
        peft_model.set_adapter(previous)
        for n, p in peft_model.named_parameters():
            p.requires_grad_(flags[n])


def check_adapter_flags(cfg: Any) -> None:
    """Check the adapter folders a run names before any model is loaded (a damaged one fails in a second)."""
    for flag in ("sft_adapter", "reward_model"):
        if getattr(cfg, flag, None):
            check_adapter_folder(getattr(cfg, flag), f"--{flag}")


def reference_kind(requested: str, sft_adapter: str | None) -> str:
    """base: adapters disabled; initial: a frozen copy of the starting adapter. auto picks by --sft_adapter."""
    check_choice("reference", requested, REFERENCE_KINDS)
    if requested == "auto":
        return "initial" if sft_adapter else "base"
    if requested == "initial" and not sft_adapter:
        return "base"  # a new LoRA starts at zero: the initial policy is the base model
    return requested


def reference_context(peft_model: Any, kind: str) -> contextlib.AbstractContextManager:
    """The reference model's forward: the base with adapters off, or the frozen 'reference' adapter."""
    return peft_model.disable_adapter() if kind == "base" else use_adapter(peft_model, "reference")


def write_outputs(
    model: Any, tokenizer: Any, cfg: Any, folder: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """The policy adapter ("default" only), tokenizer, config and extra safetensors, written into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    model.save_pretrained(folder, selected_adapters=["default"])
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    save_config(cfg, folder)
    record_base_model(folder, cfg.model, model)
    for name, tensors in (extra or {}).items():
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / name))
    return folder


def save_outputs(
    model: Any, tokenizer: Any, cfg: Any, folder: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """write_outputs into a staging folder, then swapped into `folder` all at once (its other entries stay)."""
    staged = staging_folder(folder)
    try:
        write_outputs(model, tokenizer, cfg, staged, extra)
        return install_files(staged, folder)
    finally:
        discard_staged(staged)
