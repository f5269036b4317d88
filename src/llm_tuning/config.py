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
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

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
        raise ConfigError(f"recipe {path} does not exist: pass a YAML file, or flags only")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of flag: value, got {type(data).__name__}")
    return data


def make_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build `cls` from a dict, rejecting unknown keys with the list of known ones."""
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {a: f.name for f in known.values() for a in f.metadata.get("aliases", ())}
    resolved: dict[str, Any] = {}
    for key, value in values.items():
        name = aliases.get(key, key)
        if name not in known:
            raise ConfigError(f"{source}: unknown option {key!r}; valid options: {', '.join(sorted(known))}")
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"--{name} {value!r} is not valid; choose one of: {', '.join(map(str, valid))}")


def check_positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


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
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")


def validate_groups(cfg: Any) -> None:
    """Run the `__post_init__` checks of every option group a config is built from."""
    for base in type(cfg).__mro__[1:]:
        check = base.__dict__.get("__post_init__")
        if check is not None:
            check(cfg)
