"""Synthetic MASA-style restaurant reviews, Chinese or English, with known aspect labels (seeded).

    from llm_tuning.sde.synthetic import make_masa_rows
    rows = make_masa_rows(200, "masa_d1", seed=0, mention_prob=0.5)
    # [{"text": "菜品味道很棒。价格太贵了。", "labels": {"食品评价": "正面", "价格水平": "负面", ...},
    #   "evidence": {"食品评价": "菜品味道很棒", "价格水平": "价格太贵了"}}, ...]

Each mentioned aspect is said with one of several phrasings of its sentiment (sde/synthetic_phrases.py),
shuffled with a few filler sentences, so that a small model can learn the mapping text -> labels in a few
hundred steps. The phrase used for an aspect is kept as the row's `evidence` (CoT designs use it). Slots of a
custom sentiment task without a phrase bank get generic phrasings built from their first keyword.
"""

from __future__ import annotations

import random
from typing import Any

from llm_tuning.sde.synthetic_phrases import FILLERS, GENERIC, PHRASES
from llm_tuning.sde.tasks import Task, load_task


def make_masa_rows(
    n: int,
    task: str | Task = "masa_d1",
    seed: int = 0,
    mention_prob: float | dict[str, float] = 0.5,
    label_weights: tuple[float, float, float] = (0.5, 0.2, 0.3),
    filler_prob: float = 0.5,
) -> list[dict[str, Any]]:
    """`n` rows {text, labels, evidence}; the same arguments give the same rows.

    mention_prob: chance that an aspect is mentioned (one number, or one per slot; missing slots get 0.5).
    label_weights: relative chances of positive, neutral, negative for a mentioned aspect.
    filler_prob: chance of each of up to two filler sentences.
    """
    task = load_task(task)
    if task.kind != "sentiment":
        raise ValueError(f"make_masa_rows makes sentiment rows; task {task.name} is a {task.kind} task")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    probs = mention_prob if isinstance(mention_prob, dict) else dict.fromkeys(task.slots, mention_prob)
    unknown = set(probs) - set(task.slots)
    if unknown:
        raise ValueError(
            f"mention_prob names unknown slots {sorted(unknown)}; slots: {', '.join(task.slots)}"
        )
    for value in [*probs.values(), filler_prob]:
        if not 0 <= value <= 1:
            raise ValueError(f"probabilities must be in [0, 1], got {value}")
    if len(label_weights) != 3 or min(label_weights) < 0 or sum(label_weights) <= 0:
        raise ValueError(
            f"label_weights needs 3 non-negative weights (positive, neutral, negative), got {label_weights}"
        )
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = {}
        for slot in task.slots:
            if rng.random() < probs.get(slot, 0.5):
                labels[slot] = rng.choices(task.label_words[:3], weights=label_weights)[0]
        rows.append(make_masa_row(task, labels, rng, filler_prob))
    return rows


def make_masa_row(
    task: Task, labels: dict[str, str], rng: random.Random, filler_prob: float = 0.5
) -> dict[str, Any]:
    """One review that says exactly `labels` ({slot: positive/neutral/negative word}); the rest unmentioned."""
    evidence = {}
    for slot, label in labels.items():
        if slot not in task.slots or label not in task.label_words:
            raise ValueError(f"{slot}={label!r}: not a slot and label of task {task.name}")
        if label == task.unmentioned:
            continue
        options = phrases_for(task, slot)[task.label_words.index(label)]
        evidence[slot] = rng.choice(options)
    sentences = list(evidence.values())
    fillers = FILLERS[task.language]
    sentences += [rng.choice(fillers) for _ in range(2) if rng.random() < filler_prob]
    if not sentences:
        sentences = [rng.choice(fillers)]
    rng.shuffle(sentences)
    if task.language == "zh":
        text = "。".join(sentences) + "。"
    else:
        text = ". ".join(sentences) + "."
    full = {slot: labels[slot] if slot in evidence else task.unmentioned for slot in task.slots}
    return {"text": text, "labels": full, "evidence": evidence}


def phrases_for(task: Task, slot: str) -> tuple[tuple[str, ...], ...]:
    """(positive, neutral, negative) phrasings of one slot: its bank, or generic ones on its first keyword."""
    bank = PHRASES[task.language]
    for keyword in task.keywords[slot]:
        if keyword in bank:
            return bank[keyword]
    keyword = task.keywords[slot][0]
    return tuple(tuple(p.format(kw=keyword) for p in group) for group in GENERIC[task.language])
