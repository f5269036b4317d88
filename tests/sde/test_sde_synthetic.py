"""The synthetic MASA review generator: deterministic, controllable, and saying what its labels say."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llm_tuning.sde.synthetic import make_masa_row, make_masa_rows, phrases_for
from llm_tuning.sde.synthetic_phrases import PHRASES
from llm_tuning.sde.tasks import Task, load_task, normalize_labels


@pytest.mark.parametrize("name", ["masa_d1", "masa_d2", "masa_en"])
def test_rows_are_seeded_and_valid(name):
    task = load_task(name)
    rows = make_masa_rows(50, name, seed=7)
    assert rows == make_masa_rows(50, task, seed=7)
    assert rows != make_masa_rows(50, task, seed=8)
    for row in rows:
        assert normalize_labels(task, row["labels"]) == row["labels"]
        for slot, phrase in row["evidence"].items():
            assert phrase in row["text"] and row["labels"][slot] != task.unmentioned
        mentioned = {s for s, v in row["labels"].items() if v != task.unmentioned}
        assert mentioned == set(row["evidence"])


def test_mention_prob_and_label_weights_control_the_labels():
    task = load_task("masa_d1")
    never = make_masa_rows(20, task, mention_prob=0.0)
    assert all(set(r["labels"].values()) == {"未提及"} and r["text"] for r in never)
    only_food = make_masa_rows(30, task, mention_prob={"食品评价": 1.0, **dict.fromkeys(task.slots[1:], 0.0)})
    assert all(r["labels"]["食品评价"] != "未提及" and list(r["evidence"]) == ["食品评价"] for r in only_food)
    negative = make_masa_rows(30, task, mention_prob=1.0, label_weights=(0, 0, 1))
    assert {v for r in negative for v in r["labels"].values()} == {"负面"}
    counts = Counter(
        v for r in make_masa_rows(400, task, seed=1, mention_prob=1.0) for v in r["labels"].values()
    )
    assert counts["正面"] > counts["负面"] > counts["中性"] > 0  # weights 0.5, 0.3, 0.2


def test_phrases_vary_and_speak_of_one_aspect_only():
    for name in ("masa_d1", "masa_d2", "masa_en"):
        task = load_task(name)
        for slot in task.slots:
            groups = phrases_for(task, slot)
            assert len(groups) == 3 and all(len(g) >= 3 for g in groups), slot
            others = [kw.lower() for s in task.slots if s != slot for kw in task.keywords[s]]
            for phrase in (p for g in groups for p in g):
                assert not any(kw in phrase.lower() for kw in others), (slot, phrase)
    assert set(PHRASES) == {"zh", "en"}


def test_custom_task_gets_generic_phrases_and_exact_rows():
    task = Task(name="hotel", kind="sentiment", language="zh", slots=("房间", "早餐"))
    row = make_masa_row(task, {"房间": "正面", "早餐": "未提及"}, random.Random(0), filler_prob=0)
    assert row["labels"] == {"房间": "正面", "早餐": "未提及"}
    assert row["text"] in {p + "。" for p in phrases_for(task, "房间")[0]}


def test_bad_arguments():
    with pytest.raises(ValueError, match="extraction task"):
        make_masa_rows(1, "genia")
    with pytest.raises(ValueError, match="unknown slots"):
        make_masa_rows(1, "masa_d1", mention_prob={"环境": 1.0})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        make_masa_rows(1, "masa_d1", mention_prob=2.0)
    with pytest.raises(ValueError, match="label_weights"):
        make_masa_rows(1, "masa_d1", label_weights=(1, 1))
    with pytest.raises(ValueError, match="not a slot and label"):
        make_masa_row(load_task("masa_d1"), {"食品评价": "好"}, random.Random(0))
