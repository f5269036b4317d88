"""Parsers: render -> parse round trips for every design and task, and broken or unusual answers."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.sde.designs import PRESETS, Design, parse_design, render_target
from llm_tuning.sde.parsers import find_label, parse_output, strip_preamble
from llm_tuning.sde.synthetic import make_masa_rows
from llm_tuning.sde.tasks import BUILTIN_TASKS, Task, load_task, normalize_labels

ASSETS = Path(__file__).parents[1] / "assets" / "sde"
D1 = load_task("masa_d1")
EN = load_task("masa_en")
GENIA = load_task("genia")
ZH_NER = Task(name="zh_ner", kind="extraction", language="zh", slots=("人名", "地名"))


def all_designs() -> list[Design]:
    choices = [f.metadata["choices"] for f in dataclasses.fields(Design)]
    designs = []
    for combo in itertools.product(*choices):
        try:
            designs.append(Design(*combo))
        except ConfigError:
            pass
    return designs


def rows_for(task: Task) -> list[dict]:
    """Rows that exercise every branch: nothing mentioned, everything mentioned, several spans, brackets."""
    if task.kind == "sentiment":
        rows = make_masa_rows(6, task, seed=3, mention_prob=0.5)
        rows.append({"text": "nothing here", "labels": {}})
        rows.append(
            {"text": "all of it", "labels": dict(zip(task.slots, itertools.cycle(task.label_words[:3])))}
        )
        return rows
    first, second = task.slots[0], task.slots[-1]
    return [
        {"text": "nothing here", "labels": {}},
        {"text": "one", "labels": {first: "alpha"}},
        {"text": "many", "labels": {first: ["alpha beta", "gamma"], second: ["IL-2 (human)", "delta: 4"]}},
        {"text": "tweet (HTML kept)", "labels": {first: ["Steve &quot; Stylez &quot;", "Desperado"]}},
        {"text": "all", "labels": {slot: f"span{i}" for i, slot in enumerate(task.slots)}},
    ]


TASKS = [*BUILTIN_TASKS.values(), load_task(ASSETS / "hotel_task.yaml"), ZH_NER]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_round_trip_every_design(task):
    designs = all_designs()
    assert len(designs) == 240
    for design, row in itertools.product(designs, rows_for(task)):
        target = render_target(task, design, row)
        parsed = parse_output(task, design, target)
        assert parsed.values == normalize_labels(task, row["labels"]), (design, target)
        assert not parsed.format_error and parsed.errors == [], (design, target, parsed.errors)


# ---- sentiment answers --------------------------------------------------------------------------------


def values(task: Task, **labels: str) -> dict:
    return normalize_labels(task, labels)


@pytest.mark.parametrize(
    ("design", "answer"),
    [
        ("natural", "食品评价:正面,饮品评价:负面"),  # half-width punctuation, no end mark
        ("natural", "输出：食品评价：正面，饮品评价：负面。"),  # the prompt's cue repeated
        ("natural", "食品评价：正面；饮品评价：负面"),
        ("natural", "好的，以下是结果：食品评价：正面，饮品评价：负面。"),  # junk glued to the first aspect
        ("es_sde", "好的，结果如下：\n食品评价：正面\n饮品评价：负面"),  # a preamble line
        ("es_sde", "Answer: 食品评价：正面，饮品评价：负面"),  # natural answer under the lines design
        ("es_sde", "- 食品：积极\n- 饮品评价：消极"),  # bullets, keyword aspect, synonyms
        ("es_sde", "食品评价：1\n饮品评价：-1"),  # numbers under the text design
        (
            "cot",
            "食品评价：（菜很好，不算负面）正面\n饮品评价：（难喝）负面",
        ),  # labels inside evidence ignored
        ("rcot", "食品评价：正面（但饮品评价：负面）\n饮品评价：负面（难喝）"),
        ("cot", "食品评价：菜很好吃，所以是正面\n饮品评价：难喝所以负面"),  # unbracketed evidence: last label
        (
            "json",
            '```json\n{"aspect": "食品评价", "sentiment": "正面"}\n{"aspect": "饮品评价", "sentiment": "负面"}\n```',
        ),
        ("json", '[{"aspect": "食品评价", "sentiment": "正面"}, {"aspect": "饮品评价", "sentiment": -1}]'),
        ("json", "{'aspect': '食品评价', 'sentiment': '正面'}\n{'aspect': '饮品评价', 'sentiment': '负面'}"),
        ("json", '{"食品评价": "正面", "饮品评价": "负面"}'),
        ("heuristic", '["食品评价", "正面"]\n("饮品评价", "负面")'),
        ("heuristic", '["食品评价", "正面"], ["饮品评价", "负面"]'),
    ],
)
def test_sentiment_answers_are_repaired(design, answer):
    parsed = parse_output(D1, parse_design(design), answer)
    assert parsed.values == values(D1, 食品评价="正面", 饮品评价="负面"), parsed
    assert not parsed.format_error, parsed.errors


def test_english_answers():
    parsed = parse_output(EN, PRESETS["natural"], "Answer: Food: Positive, drink: unfavourable, parking: -2.")
    assert parsed.values == values(EN, food="positive", drinks="negative")
    assert not parsed.format_error
    parsed = parse_output(EN, PRESETS["es_sde"], "food: not mentioned\nservice: favorable")
    assert parsed.values == values(EN, service="positive")


def test_bad_labels_and_unknown_aspects_are_errors_but_not_format_errors():
    parsed = parse_output(D1, Design(), "食品评价：很好吃\n环境：正面\n服务人员态度：负面")
    assert parsed.values == values(D1, 服务人员态度="负面")  # no label -> unmentioned; unknown aspect ignored
    assert not parsed.format_error
    assert (
        len(parsed.errors) == 2
        and "'很好吃' is not a label" in parsed.errors[0]
        and "环境" in parsed.errors[1]
    )


@pytest.mark.parametrize(
    ("design", "answer"),
    [
        ("natural", ""),
        ("natural", "   \n"),
        ("natural", "食品评价正面，饮品评价：负面"),  # a piece without a separator
        ("es_sde", "食品评价：\n饮品评价：负面"),  # an aspect without a label
        ("json", '{"aspect": "饮品评价", "sentiment": "负面"}\n{"aspect": "食品评价", '),
        ("json", '{"name_of_it": "饮品评价"}'),
        ("heuristic", '["饮品评价", "负面"]\nnot a list'),
        ("heuristic", '["饮品评价"]'),
    ],
)
def test_format_errors(design, answer):
    parsed = parse_output(D1, parse_design(design), answer)
    assert parsed.format_error and parsed.errors
    assert parsed.values["食品评价"] == "未提及"  # still soft-repaired into a full answer


def test_last_aspect_wins_and_nothing_means_all_unmentioned():
    parsed = parse_output(D1, PRESETS["natural"], "食品评价：正面，食品评价：负面。")
    assert parsed.values["食品评价"] == "负面"
    for answer in ("无", "无。", "None", "[]"):
        parsed = parse_output(D1, PRESETS["ou"], answer)
        assert parsed.values == values(D1) and not parsed.format_error


@pytest.mark.parametrize(
    ("text", "last", "label"),
    [
        ("正面", False, "正面"),
        ("积极", False, "正面"),
        ("-2", False, "未提及"),
        ("不算负面，整体正面", False, "负面"),
        ("不算负面，整体正面", True, "正面"),
        ("评分 -1 分", False, "负面"),
        ("很好吃", False, None),
        ("3", False, None),
    ],
)
def test_find_label(text, last, label):
    assert find_label(D1, text, last=last) == label


def test_english_find_label_prefers_the_longest_match():
    assert find_label(EN, "Unfavourable") == "negative"
    assert find_label(EN, "unfavourable", last=True) == "negative"


def test_strip_preamble():
    assert strip_preamble(D1, "输出：Answer:  食品评价：正面") == "食品评价：正面"
    assert strip_preamble(GENIA, "Here are the entities:\nprotein: IL-2") == "protein: IL-2"
    assert strip_preamble(GENIA, "protein:\nDNA: x") == "protein:\nDNA: x"  # a slot, not a preamble


# ---- extraction answers -------------------------------------------------------------------------------


def test_extraction_lines_with_loose_keys_and_quotes():
    answer = "'DNA': 'IL-2 gene'\n'cell type': ''\nProtein: NF-kappa B, IL-2\nRNA: None"  # the original's good1 style
    parsed = parse_output(GENIA, Design(), answer)
    assert parsed.values == values(GENIA, DNA="IL-2 gene", protein=["NF-kappa B", "IL-2"])
    assert not parsed.format_error


def test_extraction_unknown_type_is_a_format_error():
    parsed = parse_output(GENIA, Design(), "gene: IL-2\nprotein: NF-kB")
    assert parsed.format_error and "'gene' is not a entity_type of task genia" in parsed.errors[0]
    assert parsed.values["protein"] == ["NF-kB"]


def test_extraction_numeric_and_json_forms():
    assert parse_output(GENIA, PRESETS["numeric"], "3: IL-2\n1: None").values["protein"] == ["IL-2"]
    # a span that names a type is not taken for the start of the answer
    assert parse_output(GENIA, PRESETS["numeric"], "3: protein kinase C").values["protein"] == [
        "protein kinase C"
    ]
    two = parse_output(GENIA, PRESETS["numeric"], "1: IL-2 gene\n3: protein kinase C")
    assert two.values == values(GENIA, DNA="IL-2 gene", protein="protein kinase C")
    parsed = parse_output(
        GENIA, PRESETS["json"], '{"type": 3, "span": ["IL-2", "IL-4"]}\n{"type": "DNA", "span": null}'
    )
    assert parsed.values == values(GENIA, protein=["IL-2", "IL-4"]) and not parsed.format_error
    parsed = parse_output(GENIA, PRESETS["json"], '{"entity_type": "protein", "entity_names": ["IL-2"]}')
    assert parsed.values["protein"] == ["IL-2"]


def test_original_heuristic_outputs():
    maven = load_task("maven")
    design = PRESETS["heuristic"]
    answer = 'Output: ["Causation", "led to"]\n["Motion", "came"] and more\n("Attack", "bomb")'
    parsed = parse_output(maven, design, answer)
    assert parsed.values["Causation"] == ["led to"] and parsed.values["Motion"] == ["came"]
    assert parsed.values["Attack"] == ["bomb"] and not parsed.format_error
    parsed = parse_output(GENIA, design, "['protein', 'IL-2', 'IL-4']\n[]")
    assert parsed.values["protein"] == ["IL-2", "IL-4"]
    assert parse_output(maven, design, "[]").values == values(maven)
    broken = parse_output(maven, design, '["Attack", "bomb"]\n["Motion", "wind"')
    assert broken.format_error and broken.values["Attack"] == ["bomb"]
