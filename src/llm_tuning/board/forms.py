"""A command's form, derived from the same config dataclass (and its help lines) the CLI's flags come from.

    form_groups(TrainConfig)            -> [{"title": "model", "fields": [{"name": "model", ...}, ...]}, ...]
    command_args(TrainConfig, values)   -> ["--data", "train.jsonl", "--max_steps", "3"]

There is no list of fields here: the fields, types, defaults, help and choices are read from the dataclass
(`config.option` metadata), grouped by the option group that declares them (ModelOptions, DataOptions, ...,
then the command's own), in the order `--help` lists them. A second list could drift; this cannot.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from llm_tuning.board.paths import PathRefused, inside
from llm_tuning.config import ConfigError, _base_type, coerce_value, make_config

# shown first and open in the form: what a first run needs; every other field is still there, below
ESSENTIAL = ("model", "data", "data_path", "adapter", "prompt_key", "target_key", "task", "designs", "metrics",
             "output_dir", "output", "max_steps", "learning_rate", "lora_rank", "per_device_train_batch_size",
             "save_steps", "logging_steps", "limit", "max_new_tokens")  # fmt: skip


def _kind(hint: Any) -> str:
    kind, is_list = _base_type(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        # `list[str] | str | None` (train's --data) is a repeatable flag as well
        is_list = is_list or any(typing.get_origin(a) is list for a in typing.get_args(hint))
    if is_list:
        return "list"
    return {bool: "bool", int: "int", float: "float", dict: "dict"}.get(kind, "str")


def _owner(cls: type, name: str) -> type:
    """The class in `cls`'s MRO that declares field `name` (its option group)."""
    for base in reversed(cls.__mro__):  # the most basic class first: where --help first lists it
        if name in base.__dict__.get("__annotations__", {}):
            return base
    return cls


def _title(group: type, cls: type) -> str:
    if group is cls:
        return "command"
    return group.__name__.removesuffix("Options").lower() or group.__name__


def form_fields(cls: type) -> list[dict[str, Any]]:
    """One entry per flag of `cls`: name, kind, default, help, choices, aliases, group, optional."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        meta = f.metadata
        out.append({"name": f.name, "kind": _kind(hints[f.name]), "default": default, "help": meta.get("help", ""),
                    "choices": list(meta.get("choices") or []) or None, "aliases": list(meta.get("aliases", ())),
                    "group": _title(_owner(cls, f.name), cls),
                    "optional": type(None) in typing.get_args(hints[f.name])})  # fmt: skip
    return out


def form_groups(cls: type) -> list[dict[str, Any]]:
    """The fields grouped by option group, in --help order; the essentials first, in their own group."""
    fields = form_fields(cls)
    essentials = sorted(
        (f for f in fields if f["name"] in ESSENTIAL), key=lambda f: ESSENTIAL.index(f["name"])
    )
    groups: dict[str, list] = {"essentials": essentials}
    for f in fields:
        if f["name"] not in ESSENTIAL:
            groups.setdefault(f["group"], []).append(f)
    return [{"title": t, "fields": fs} for t, fs in groups.items() if fs]


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def config_values(cls: type, raw: dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """The form's values that differ from the defaults, typed, and every path kept under `workdir`.

    A ConfigError names the flag (unknown, wrong type, a path outside the working folder)."""
    hints = typing.get_type_hints(cls)
    fields = {f["name"]: f for f in form_fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in fields:
            raise ConfigError(f"unknown option {name!r}; valid options: {', '.join(sorted(fields))}")
        if isinstance(value, list):
            value = [v for v in value if not _empty(v)]
        if _empty(value) and fields[name]["optional"]:
            continue
        if _empty(value) and fields[name]["kind"] in ("list", "dict"):
            continue
        typed = coerce_value(name, value, hints[name], "form")
        if typed == fields[name]["default"]:
            continue
        check_paths(name, typed, workdir)
        values[name] = typed
    return values


def check_paths(name: str, value: Any, workdir: str | Path) -> None:
    """Every text value that could be a path must resolve under the working folder: `../x`, `/etc/x`, `~/x`
    and `link/new` (a symlink out, even to a folder not made yet) are refused. Text that is no path at all
    (`cosine`, a hub id) resolves inside it and passes; so `name=` prefixes and `:weight` suffixes are read
    both ways, as the commands read them (`--adapter name=dir:0.5`, `--data file:0.3`)."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not item.strip():
            continue
        text = item.split("=", 1)[1] if "=" in item and "/" not in item.split("=", 1)[0] else item
        for candidate in {text, re.sub(r":-?[0-9.]+(e-?[0-9]+)?$", "", text)}:
            try:
                if candidate.startswith("~"):
                    raise PathRefused(f"{candidate!r}: give a path under the working folder (no ~)")
                inside(workdir, candidate)
            except PathRefused as err:
                raise ConfigError(f"--{name}: {err}") from None


def validate(cls: type, values: dict[str, Any]) -> Any:
    """The config the CLI would build from these values (its own checks: ConfigError naming the flag)."""
    return make_config(cls, values, source="form")


def command_args(cls: type, values: dict[str, Any]) -> list[str]:
    """The flags that give `values`: `--flag value`, a bool as `--flag` / `--flag false`, a list repeated."""
    args: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            args += [f"--{name}"] if value else [f"--{name}", "false"]
        elif isinstance(value, list):
            for item in value:
                args += [f"--{name}", str(item)]
        elif isinstance(value, dict):
            continue  # no flag form: the recipe carries it (recipe_values)
        else:
            args += [f"--{name}", str(value)]
    return args


def recipe_values(values: dict[str, Any]) -> dict[str, Any]:
    """What only a YAML recipe can carry (mappings such as train's extra_args)."""
    return {k: v for k, v in values.items() if isinstance(v, dict)}


def shell_line(command: str, args: list[str], recipe: str | None = None) -> str:
    import shlex

    return " ".join(["llm-tuning", command, *([recipe] if recipe else []), *map(shlex.quote, args)])


def read_recipe(cls: type, path: Path) -> dict[str, Any]:
    """A YAML recipe's values for the form (ConfigError for a bad file or an unknown key)."""
    from llm_tuning.config import load_recipe

    data = load_recipe(path)
    names = {f.name: f.name for f in dataclasses.fields(cls) if f.init}
    names.update({a: f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())})
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(f"recipe {path.name}: unknown option(s) {', '.join(unknown)}")
    return {names[k]: v for k, v in data.items()}


def recipe_text(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
