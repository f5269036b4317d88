"""Exact-match scoring of numeric answers, shared by the demo, predict reports and RLHF rewards."""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The answer a reply commits to: the number after the last '=', else the last number in it."""
    tail = text.rsplit("=", 1)[-1] if "=" in text else text
    found = NUMBER.findall(tail.replace(",", "")) or NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def is_correct(prediction: str, answer: int | float | str) -> bool:
    number = final_number(prediction)
    if number is None:
        return False
    try:
        return float(number) == float(answer)
    except ValueError:
        return False


def exact_match(predictions: list[str], answers: list[int | float | str]) -> float:
    """Share of predictions whose final number equals the answer."""
    if not predictions:
        return 0.0
    return sum(is_correct(p, a) for p, a in zip(predictions, answers, strict=True)) / len(predictions)
