"""Dataclass configs: a YAML recipe < command-line flags, saved with every output.

    llm-tuning train configs/sft_lora.yaml --learning_rate 2e-4

Every command's config is a dataclass whose fields are its flags: `option(default, help)` gives each
a type, a default and one line of help; `aliases` keeps the original LLM-Tuning flag names working
(`--model_checkpoint` for `--model`). `parse_config` builds the argparse parser from the dataclass,
so the function signature is the schema and there is no second list of flags to drift.

The option groups below (model, data, LoRA, trainer) are shared by the commands that need them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llm_tuning.files import write_text

C = TypeVar("C")

DEFAULT_MODEL = "smollm2-135m-instruct"


class ConfigError(ValueError):
    """A bad config value; the message names the flag and what would be valid."""


def option(default: Any, help: str, *, aliases: tuple[str, ...] = (), choices: tuple | None = None) -> Any:
    """A config field with its help line, extra flag names and allowed values."""
    meta = {"help": help, "aliases": aliases, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def to_bool(text: str | bool) -> bool:
    """Parse `true/false/1/0/yes/no` as the original scripts' `--skip_overlength False` needs."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _base_type(hint: Any) -> tuple[type, bool]:
    """(scalar type, is_list) for a field's type hint; Optional[X] gives X."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(hint)[0], True
    return hint, False


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser whose flags are the dataclass fields (defaults left to the dataclass)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS, allow_abbrev=False
    )
    parser.add_argument("recipe", nargs="?", help="optional YAML recipe; flags given here override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, is_list = _base_type(hints[f.name])
        meta = f.metadata
        names = [f"--{f.name}", *(f"--{a}" for a in meta.get("aliases", ()))]
        default = f.default if f.default is not dataclasses.MISSING else "[]"
        help_text = f"{meta.get('help', '')} (default: {default})".replace("%", "%%")  # argparse formats help
        if kind is bool:
            parser.add_argument(*names, dest=f.name, nargs="?", const=True, type=to_bool, help=help_text)
        elif is_list:
            parser.add_argument(
                *names, dest=f.name, action="append", type=kind, help=help_text + " (repeatable)"
            )
        else:
            parser.add_argument(*names, dest=f.name, type=kind, choices=meta.get("choices"), help=help_text)
    return parser


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe into a flat {field: value} dict."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"recipe {path} {what}: pass a YAML file, or flags only")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8-sig")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"recipe {path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"recipe {path}{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of flag: value, got {type(data).__name__}")
    return data


def _coerce_scalar(key: str, value: Any, kind: Any, source: str) -> Any:
    """`value` as a `kind`: YAML reads `1e-3` as a string and `"False"` stays a string; both are meant as values."""
    wrong = ConfigError(f"{source}: {key} must be {_KIND_NAMES.get(kind, getattr(kind, '__name__', kind))}, "
                        f"got {value!r} ({type(value).__name__})")  # fmt: skip
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and not isinstance(value, float):
            try:
                return to_bool(value)
            except argparse.ArgumentTypeError:
                raise wrong from None
        raise wrong
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise wrong
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise wrong from None
        if kind is int:
            if isinstance(number, float) and not number.is_integer():
                raise wrong
            return int(number)
        return float(number)
    if kind is str:
        if isinstance(value, (dict, list, bool)):
            raise wrong
        return str(value)
    if kind is dict and not isinstance(value, dict):
        raise wrong
    return value


_KIND_NAMES = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text",
    dict: "a mapping",
}


def coerce_value(key: str, value: Any, hint: Any, source: str) -> Any:
    """A recipe value converted to the field's type, or a ConfigError naming the recipe, key and type."""
    kind, is_list = _base_type(hint)
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise ConfigError(
            f"{source}: {key} is empty (null); give {_KIND_NAMES.get(kind, 'a value')} or leave it out"
        )
    if is_list:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce_scalar(key, item, kind, source) for item in items]
    return _coerce_scalar(key, value, kind, source)


def make_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build `cls` from a dict, rejecting unknown keys and converting values to each field's type."""
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {a: f.name for f in known.values() for a in f.metadata.get("aliases", ())}
    hints = typing.get_type_hints(cls)
    resolved: dict[str, Any] = {}
    for key, value in values.items():
        name = aliases.get(key, key)
        if name not in known:
            raise ConfigError(f"{source}: unknown option {key!r}; valid options: {', '.join(sorted(known))}")
        if not isinstance(key, str):
            raise ConfigError(f"{source}: option names must be text, got {key!r}")
        value = coerce_value(key, value, hints[name], source)
        choices = known[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"{source}: {key} {value!r} is not valid; choose one of: {', '.join(map(str, choices))}"
            )
        resolved[name] = value
    return cls(**resolved)


def parse_config(cls: type[C], argv: list[str] | None, prog: str = "llm-tuning") -> C:
    """Parse flags (over an optional YAML recipe) into a validated config."""
    parser = build_parser(cls, prog, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
    namespace = vars(parser.parse_args(argv))
    recipe = namespace.pop("recipe", None)
    values = load_recipe(recipe) if recipe else {}
    values.update(namespace)
    return make_config(cls, values, source=recipe or "flags")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def save_config(cfg: Any, folder: str | Path, name: str = "llm_tuning_config.yaml") -> Path:
    """Write the resolved config next to a command's outputs (atomically)."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


def check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"--{name} {value!r} is not valid; choose one of: {', '.join(map(str, valid))}")


def check_positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_range(name: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    """`value` in [low, high] (or (low, high] with low_open); None passes."""
    if value is None:
        return
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        raise ConfigError(f"--{name} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value}")


def check_device(value: str) -> None:
    """A device torch knows, and one this machine has: `--device cuda` without a GPU fails here, not mid-run."""
    if value == "auto":
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {value!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {value}: no CUDA GPU is visible to torch here; use --device cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {value}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}"
            )
    elif device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"--device {value}: Apple's MPS is not available here; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {value!r}: use auto, cpu, cuda, cuda:N or mps")


def check_output_path(name: str, value: str | None, folder: bool = False) -> None:
    """An output path of the right kind: a file path that is not a folder, or a folder path that is not a file."""
    if not value:
        return
    path = Path(value)
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"--{name} {value} is a file; give a folder to write into")
    if not folder and path.is_dir():
        raise ConfigError(f"--{name} {value} is a folder; give the path of a file to write")


LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay")  # fmt: skip


def check_training(cfg: Any) -> None:
    """The numbers every Trainer-based command shares (train, rm, dpo): each flag that the config has."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "learning_rate", "num_train_epochs", "logging_steps", "save_steps", "eval_steps"):  # fmt: skip
        if hasattr(cfg, name):
            check_positive(name, getattr(cfg, name))
    for name in ("warmup_steps", "weight_decay", "max_grad_norm"):  # max_grad_norm 0: no clipping, as in HF
        if hasattr(cfg, name):
            check_positive(name, getattr(cfg, name), allow_zero=True)
    if getattr(cfg, "max_steps", -1) != -1 and cfg.max_steps < 1:
        raise ConfigError(f"--max_steps must be >= 1, or -1 to run --num_train_epochs; got {cfg.max_steps}")
    limit = getattr(cfg, "save_total_limit", None)
    if limit is not None and limit < 1:
        raise ConfigError(
            f"--save_total_limit must be >= 1 (or left out: keep every checkpoint), got {limit}"
        )
    if hasattr(cfg, "lr_scheduler_type"):
        check_choice("lr_scheduler_type", cfg.lr_scheduler_type, LR_SCHEDULERS)
    if getattr(cfg, "fp16", False) and getattr(cfg, "bf16", False):
        raise ConfigError("choose one of --fp16 and --bf16")
    if hasattr(cfg, "report_to"):
        check_report_to(cfg.report_to)
    check_output_path("output_dir", getattr(cfg, "output_dir", None), folder=True)


def check_report_to(value: str) -> None:
    """Comma-separated logging integrations that transformers knows (the Trainer would fail after loading)."""
    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        known = (*INTEGRATION_TO_CALLBACK, "none", "all")
    except ImportError:  # another transformers layout: leave the check to the Trainer
        return
    unknown = [v for v in (p.strip() for p in str(value).split(",")) if v not in known]
    if unknown or not str(value).strip():
        raise ConfigError(
            f"--report_to {value!r} is not valid; choose from: {', '.join(known)} (comma-separated)"
        )


# ---- option groups shared by several commands ------------------------------------------------


@dataclass
class ModelOptions:
    model: str = option(
        DEFAULT_MODEL,
        "local folder, hub id, or the built-in smollm2-135m-instruct",
        aliases=("model_checkpoint", "model_name_or_path"),
    )
    dtype: str = option(
        "auto", "weights precision: auto (fp32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16"
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:1, mps")
    trust_remote_code: bool = option(
        False, "run the model repository's own Python code (needed by ChatGLM, Baichuan)"
    )

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"))
        if not self.model or not str(self.model).strip():
            raise ConfigError("--model is empty; give a model folder, a hub id or smollm2-135m-instruct")
        check_device(self.device)


@dataclass
class DataOptions:
    prompt_key: str = option("prompt", "field holding the prompt (the original's --prompt_key q)")
    target_key: str = option("target", "field holding the answer (the original's --target_key a)")
    max_seq_length: int = option(2048, "longest tokenized row (prompt + target)", aliases=("max_length",))
    skip_overlength: bool = option(False, "drop rows longer than --max_seq_length instead of truncating them")
    template: str = option(
        "chat", "chat: wrap prompts in the model's chat template; none: raw text as the original"
    )
    prompt_loss: bool = option(
        False, "also train on the prompt tokens (SDE's MI); default masks them (No-MI)"
    )
    system_prompt: str | None = option(
        None, "system message for the chat template (default: the template's own)"
    )

    def __post_init__(self) -> None:
        check_choice("template", self.template, ("chat", "none"))
        check_positive("max_seq_length", self.max_seq_length)


@dataclass
class LoraOptions:
    lora_rank: int = option(8, "LoRA rank r", aliases=("lora_r",))
    lora_alpha: int | None = option(None, "LoRA alpha (default: 2 x rank)")
    lora_dropout: float = option(
        0.0, "dropout on the LoRA input (default 0, as in PEFT: training is faster without)"
    )
    target_modules: str = option("auto", "comma-separated module names, or auto: every linear projection")
    use_dora: bool = option(False, "weight-decomposed LoRA (DoRA)")
    use_rslora: bool = option(False, "rank-stabilised scaling alpha / sqrt(r)")
    lora_on_router: bool = option(
        False, "mixture of experts: adapt the routers too (off: adapting them destabilises routing)"
    )

    def __post_init__(self) -> None:
        check_positive("lora_rank", self.lora_rank)
        if self.lora_alpha is not None and (not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0):
            # alpha scales the adapter's update: 0 gives an adapter that changes nothing, < 0 one that is reversed
            raise ConfigError(f"--lora_alpha must be > 0 (the update is scaled by alpha / rank; 0 would make the "
                              f"adapter do nothing), got {self.lora_alpha}; leave it out for 2 x rank")  # fmt: skip
        if not math.isfinite(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not str(self.target_modules).strip(" ,"):
            raise ConfigError("--target_modules is empty; give module names (q_proj,v_proj) or auto")


def validate_groups(cfg: Any) -> None:
    """Run the `__post_init__` checks of every option group a config is built from."""
    for base in type(cfg).__mro__[1:]:
        check = base.__dict__.get("__post_init__")
        if check is not None:
            check(cfg)
