"""Weighted adapter mixes computed per request, from the loaded adapters, instead of built at start-up.

    llm-tuning predict --adapter math=weights/math --adapter style=weights/style --mix math:0.7+style:0.3 ...
    llm-tuning eval --adapter math=weights/math --adapter style=weights/style --mix both=math:0.5+style:0.5 ...
    curl .../v1/chat/completions -d '{"model": "math:0.7+style:0.3", ...}'      # llm-tuning serve

One syntax everywhere: `ADAPTER:WEIGHT+ADAPTER:WEIGHT[@cat]` (a weight left out is 1); the flags take an
optional `NAME=` in front (the column name in compare / eval). A mix row's LoRA update is the weighted sum of
its adapters' LoRA outputs, sum_i w_i * scaling_i * B_i(A_i(x)), added by forward hooks on PEFT's LoRA Linear
layers: exactly what `add_weighted_adapter(..., combination_type="cat")` builds, so `cat` is the one method
that works per request. The others (linear, svd, ties, dare, magnitude_prune) build new weights: they are
refused here and must be built at start-up (`--adapter NAME=FOLDER:WEIGHT --mix_method M`, or serve's `--mix`).
DoRA adapters and LoRA on anything but Linear layers (embeddings, fused expert weights) are refused too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llm_tuning.config import ConfigError

Mix = tuple[tuple[str, float], ...]
ROW_MIX_METHODS = ("cat",)  # the methods a single row can compute from the loaded adapters
ALL_ROWS = slice(None)  # rows of a mix_hooks group: every row of the batch


def is_row_mix(text: str) -> bool:
    """Whether a model / adapter name spells a per-request mix rather than naming one adapter."""
    return any(c in text for c in "+:@")


def parse_row_mix(text: str, adapters: dict[str, Any]) -> Mix:
    """`math:0.7+style:0.3[@cat]` -> (("math", 0.7), ("style", 0.3)).

    `adapters` maps the loaded adapter names to their PEFT configs. Raises ConfigError starting `mix 'TEXT': `.
    """
    spec, _, method = text.partition("@")
    if method and method not in ROW_MIX_METHODS:
        raise ConfigError(f"mix {text!r}: {method!r} cannot be computed per request (only {', '.join(ROW_MIX_METHODS)}, a "
                          f"weighted sum of the adapters' outputs, can); build it up front with --mix_method {method}")  # fmt: skip
    if "," in spec:
        raise ConfigError(f"mix {text!r}: join adapters with '+', not ',': ADAPTER:WEIGHT+ADAPTER:WEIGHT, e.g. "
                          "math:0.7+style:0.3")  # fmt: skip
    mix: dict[str, float] = {}
    for part in spec.split("+"):
        name, colon, weight = part.strip().partition(":")
        if name not in adapters:
            loaded = ", ".join(adapters) or "none (give them with --adapter NAME=FOLDER)"
            raise ConfigError(f"mix {text!r}: no adapter named {name!r}; loaded adapters: {loaded}; "
                              "write ADAPTER:WEIGHT+ADAPTER:WEIGHT, e.g. math:0.7+style:0.3")  # fmt: skip
        if name in mix:
            raise ConfigError(f"mix {text!r}: {name!r} is named twice")
        try:
            value = float(weight) if colon else 1.0
        except ValueError:
            raise ConfigError(f"mix {text!r}: the weight {weight!r} of {name!r} is not a number") from None
        if value != value or abs(value) == float("inf"):
            raise ConfigError(f"mix {text!r}: the weight of {name!r} must be a finite number")
        if getattr(adapters[name], "use_dora", False):
            raise ConfigError(
                f"mix {text!r}: {name!r} uses DoRA, whose magnitude vectors cannot be mixed by weights"
            )
        mix[name] = value
    return tuple(mix.items())


def not_row_mixable(model: Any) -> set[str]:
    """Adapters with LoRA on anything but Linear layers: the mix hooks only compute Linear ones."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    names: set[str] = set()
    for module in model.modules():
        if isinstance(module, LoraLayer) and not isinstance(module, LoraLinear):
            names |= set(module.lora_A) | set(getattr(module, "lora_embedding_A", {}))
    return names


def check_row_mix(text: str, model: Any, adapters: list[str] | None = None) -> Mix:
    """The mix `text` spells over `model`'s loaded adapters (or only `adapters` of them), fully checked."""
    loaded = getattr(model, "peft_config", {})
    names = loaded if adapters is None else [a for a in adapters if a in loaded]
    mix = parse_row_mix(text, {n: loaded[n] for n in names})
    odd = sorted({name for name, _ in mix} & not_row_mixable(model))
    if odd:
        raise ConfigError(f"mix {text!r}: {odd} put LoRA on layers other than Linear (embeddings, expert weights), "
                          "which a per-request mix cannot compute; build the mix up front with --mix_method cat")  # fmt: skip
    return mix


def parse_mix_option(text: str, model: Any, flag: str = "--mix") -> tuple[str, Mix]:
    """`[NAME=]ADAPTER:WEIGHT+ADAPTER:WEIGHT` -> (its name, the mix); ConfigError naming `flag` when wrong."""
    name, eq, spec = text.partition("=")
    if not eq:
        name, spec = text, text
    name = name.strip()
    try:
        mix = check_row_mix(spec.strip(), model)
        if eq and not re.fullmatch(r"[\w.-]+", name):
            raise ConfigError(
                f"mix {text!r}: the name {name!r} must be letters, digits, _, . or - (NAME=A:W+B:W)"
            )
        return name, mix
    except ConfigError as err:
        raise ConfigError(f"{flag} {str(err).removeprefix('mix ')}") from None


@contextmanager
def mix_hooks(model: Any, groups: list[tuple[Any, Mix]]) -> Iterator[None]:
    """While in it, every LoRA Linear adds, to the output rows of each group (a list of row indices, or
    ALL_ROWS), sum_i weight_i * scaling_i * B_i(A_i(x)) over that group's mix.

    The mixed rows must run without any adapter of their own (PEFT's "__base__" in a mixed batch, or
    adapters disabled), so this sum is their whole LoRA update: exactly what
    `add_weighted_adapter(..., combination_type="cat")` builds (A_i scaled by weight_i * scaling_i,
    concatenated), up to float rounding.
    """
    if not groups:
        yield
        return
    from peft.tuners.lora import Linear as LoraLinear

    def hook(module: Any, args: tuple, output: Any) -> Any:
        x = args[0]  # (batch, seq, in)
        for rows, mix in groups:
            extra = None
            for name, weight in mix:
                if name in module.lora_A:
                    a, b = module.lora_A[name], module.lora_B[name]
                    out = b(a(x[rows].to(a.weight.dtype))) * (module.scaling[name] * weight)
                    extra = out if extra is None else extra + out
            if extra is not None:
                output[rows] += extra.to(output.dtype)
        return output

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, LoraLinear)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def whole_batch_mix(model: Any, mix: Mix) -> Iterator[Any]:
    """Run `model` (any forward: generate, the batch engine, a loss) as the `cat` mix `mix`, on every row."""
    with model.disable_adapter(), mix_hooks(model, [(ALL_ROWS, mix)]):
        yield model
