"""Reward functions for `llm-tuning ppo` and `grpo`: built-in verifiable rewards and your own.

    llm-tuning grpo --data questions.jsonl --reward exact_match --reward format
    llm-tuning grpo --data questions.jsonl --reward my_rewards:brevity      # a module on PYTHONPATH
    llm-tuning grpo --data questions.jsonl --reward ./rewards.py:brevity    # or a file

A reward function takes TRL's arguments and returns one number per completion:

    def brevity(prompts: list[str], completions: list[str], **columns) -> list[float]:
        return [-len(c) / 100 for c in completions]

`columns` holds the data rows' other fields as lists (e.g. `answer=[...]`), one item per completion.
A function that raises or returns anything but one finite number per completion stops the run with a
RewardFunctionError that names it.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.eval.answers import final_number, is_correct
from llm_tuning.eval.user_functions import load_function

RewardFn = Callable[..., list[float]]
# A reply that commits to one answer on one line, "... = 42" (the arithmetic demo's target format).
ANSWER_FORMAT = re.compile(r"^[^\n]*=\s*-?\d+(?:\.\d+)?\s*$")


class RewardFunctionError(ConfigError):
    """A reward function failed or returned something other than one number per completion."""


def exact_match(prompts: list[str], completions: list[str], answer: list | None = None,
                target: list | None = None, **_: Any) -> list[float]:  # fmt: skip
    """1.0 when the completion's final number equals the row's `answer` (or its `target`'s number), else 0.0."""
    if answer is None and target is None:
        raise ValueError("exact_match needs an `answer` (or `target`) field in every data row")
    answers = answer if answer is not None else [final_number(str(t)) for t in target or []]
    return [
        1.0 if a is not None and is_correct(c, a) else 0.0 for c, a in zip(completions, answers, strict=True)
    ]


def answer_format(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """1.0 when the completion is one line ending in `= NUMBER` (e.g. "47 + 38 = 85"), else 0.0."""
    return [1.0 if ANSWER_FORMAT.match(c.strip()) else 0.0 for c in completions]


BUILTIN_REWARDS: dict[str, RewardFn] = {"exact_match": exact_match, "format": answer_format}


@dataclass(frozen=True)
class NamedReward:
    name: str  # the --reward value, used in error messages
    fn: RewardFn
    weight: float = 1.0

    @property
    def key(self) -> str:
        """The name logged as reward/<key>: the built-in's name or the function's."""
        return self.name.rsplit(":", 1)[-1]


def load_reward(spec: str, weight: float = 1.0) -> NamedReward:
    """A built-in name (exact_match, format) or `module:function` / `path/to/file.py:function`."""
    if spec in BUILTIN_REWARDS:
        return NamedReward(spec, BUILTIN_REWARDS[spec], weight)
    if ":" not in spec:
        raise ConfigError(f"--reward {spec!r} is not a built-in reward ({', '.join(BUILTIN_REWARDS)}) "
                          "nor module:function")  # fmt: skip
    return NamedReward(spec, load_function(spec, "--reward"), weight)


def load_rewards(specs: list[str], weights: list[float] | None = None) -> list[NamedReward]:
    if weights and len(weights) != len(specs):
        raise ConfigError(
            f"--reward_weights gives {len(weights)} weights for {len(specs)} --reward functions"
        )
    return [load_reward(s, (weights or [1.0] * len(specs))[i]) for i, s in enumerate(specs)]


def call_reward(reward: NamedReward, prompts: list[str], completions: list[str],
                columns: dict[str, list[Any]]) -> list[float]:  # fmt: skip
    """The function's rewards, checked: one finite number per completion, or a RewardFunctionError."""
    try:
        values = reward.fn(prompts=prompts, completions=completions, **columns)
    except Exception as err:  # a user's function can raise anything: report which one and why
        raise RewardFunctionError(f"reward function {reward.name} raised {type(err).__name__}: {err} "
                                  f"(on a batch of {len(completions)} completions)") from err  # fmt: skip
    if not isinstance(values, (list, tuple)) and hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != len(completions):
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
        raise RewardFunctionError(f"reward function {reward.name} must return a list of {len(completions)} "
                                  f"numbers (one per completion), got {got}")  # fmt: skip
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise RewardFunctionError(f"reward function {reward.name} returned {value!r} "
                                      f"({type(value).__name__}) for completion {i}; rewards must be finite numbers")  # fmt: skip
        out.append(float(value))
    return out


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts -> {field: [value per row]} (None where a row lacks the field), as TRL passes them."""
    names = sorted({k for row in rows for k in row})
    return {name: [row.get(name) for row in rows] for name in names}
