"""Tasks: the built-ins, YAML task files and their errors, gold label normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.sde.tasks import BUILTIN_TASKS, DataError, Task, load_task, normalize_labels, task_from_dict

ASSETS = Path(__file__).parents[1] / "assets" / "sde"


def test_builtin_masa_tasks_have_the_paper_aspects_and_keywords():
    d1 = load_task("masa_d1")
    assert d1.slots == ("食品评价", "饮品评价", "价格水平", "卫生情况", "服务人员态度", "停车方便程度")
    assert [d1.keywords[s][0] for s in d1.slots] == ["食品", "饮品", "价格", "卫生", "服务", "停车"]
    assert d1.label_words == ("正面", "中性", "负面", "未提及")
    assert d1.numeric_labels == ("1", "0", "-1", "-2")
    assert (d1.kv_sep, d1.pair_sep, d1.end, d1.cue) == ("：", "，", "。", "输出：")
    d2 = load_task("masa_d2")
    assert d2.slots == ("交通便利程度", "排队等候情况", "点菜上菜速度", "装修情况", "嘈杂情况")
    assert d2.keywords["排队等候情况"] == ("排队", "等候")
    en = load_task("masa_en")
    assert en.slots == ("food", "drinks", "price", "hygiene", "service", "parking")
    assert en.label_words == ("positive", "neutral", "negative", "unmentioned")
    assert (en.kv_sep, en.pair_sep, en.end) == (": ", ", ", ".")


def test_builtin_extraction_tasks():
    assert load_task("genia").slots == ("DNA", "RNA", "protein", "cell_type", "cell_line")
    maven = load_task("maven")
    assert maven.slots[0] == "Catastrophe" and maven.slots[-1] == "Conquering" and len(maven.slots) == 10
    wnut = load_task("wnut16")
    assert "geo-loc" in wnut.slots and len(wnut.slots) == 10
    assert wnut.numeric_labels == tuple(str(i) for i in range(1, 11))
    assert wnut.none_word == "None" and wnut.label_words == ()
    assert set(BUILTIN_TASKS) == {"masa_d1", "masa_d2", "masa_en", "genia", "maven", "wnut16"}


def test_tasks_are_hashable_values():
    assert len({load_task("masa_d1"), load_task("masa_d1"), load_task("genia")}) == 2


def test_numbers_map_both_ways():
    d1 = load_task("masa_d1")
    assert d1.number_of("负面") == "-1" and d1.word_of("-2") == "未提及" and d1.word_of(" 1 ") == "正面"
    assert d1.word_of("7") is None
    genia = load_task("genia")
    assert genia.number_of("protein") == "3" and genia.word_of("5") == "cell_line"


def test_yaml_task_gets_language_defaults():
    task = load_task(ASSETS / "hotel_task.yaml")
    assert task.name == "hotel" and task.slots == ("房间评价", "早餐评价", "位置")
    assert task.keywords == {"房间评价": ("房间", "客房"), "早餐评价": ("早餐",), "位置": ("位置",)}
    assert task.synonyms["很好"] == "正面" and task.synonyms["积极"] == "正面"  # its own, plus the language's
    assert task.label_words == ("正面", "中性", "负面", "未提及") and task.kv_sep == "："
    assert "{slots}" in task.instruction


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: t\nkind: ranking\nslots: [a]\n", "'kind'"),
        ("name: t\nkind: sentiment\nslots: []\n", "'slots' is empty"),
        ("name: t\nkind: sentiment\n", "'slots' is missing"),
        ("name: t\nkind: sentiment\nslots: [a]\ncolour: red\n", "unknown field(s) ['colour']"),
        ("name: t\nkind: sentiment\nslots: [a]\nlanguage: fr\n", "'language'"),
        ("name: t\nkind: sentiment\nslots: [a]\nkeywords: {b: x}\n", "'keywords' names unknown slots ['b']"),
        (
            "name: t\nkind: sentiment\nslots: [a]\nsynonyms: {good: great}\n",
            "'synonyms' maps to unknown labels",
        ),
        ("name: t\nkind: sentiment\nslots: [a]\nlabel_words: [pos, neg]\n", "'label_words' needs 4 words"),
        ("name: t\nkind: sentiment\nslots: [a, a]\n", "duplicates"),
        ("name: t\nkind: extraction\nslots: [a]\nkv_sep: '='\n", "'kv_sep'"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_yaml_task_errors_name_the_file_and_field(tmp_path, text, needle):
    path = tmp_path / "bad_task.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_task(path)
    assert needle in str(err.value)
    assert "bad_task.yaml" in str(err.value)


def test_unknown_task_lists_builtins():
    with pytest.raises(ConfigError, match="masa_d1, masa_d2"):
        load_task("nope")


def test_task_from_dict_and_passthrough():
    task = task_from_dict({"name": "x", "kind": "extraction", "language": "zh", "slots": ["人名", "地名"]})
    assert task.none_word == "无" and task.span_sep == "、" and task.pair_sep == "；" and task.end == "。"
    assert load_task(task) is task
    no_end = Task(name="y", kind="extraction", language="zh", slots=("人名",), end="")
    assert no_end.end == ""


def test_normalize_labels_fills_slots_and_accepts_numbers_and_synonyms():
    d1 = load_task("masa_d1")
    labels = normalize_labels(d1, {"食品评价": "积极", "价格水平": -1, "卫生情况": "0"})
    assert labels == {
        "食品评价": "正面",
        "饮品评价": "未提及",
        "价格水平": "负面",
        "卫生情况": "中性",
        "服务人员态度": "未提及",
        "停车方便程度": "未提及",
    }
    genia = load_task("genia")
    assert normalize_labels(genia, {"protein": " IL-2 ", "DNA": ["a", "b"]})["protein"] == ["IL-2"]
    assert normalize_labels(genia, None)["RNA"] == []


@pytest.mark.parametrize(
    ("task", "labels", "needle"),
    [
        (
            "masa_d1",
            {"食品评价": "好"},
            "'好' is not a label of task masa_d1; valid: 正面, 中性, 负面, 未提及",
        ),
        ("masa_d1", {"环境": "正面"}, "'环境', not a slot of task masa_d1"),
        ("masa_d1", ["正面"], "must be a mapping"),
        ("genia", {"protein": 3}, "labels.protein"),
        ("genia", {"protein": ["", "x"]}, "empty span"),
    ],
)
def test_normalize_labels_errors(task, labels, needle):
    with pytest.raises(DataError) as err:
        normalize_labels(load_task(task), labels, where="f.jsonl:3")
    assert needle in str(err.value) and "f.jsonl:3" in str(err.value)
