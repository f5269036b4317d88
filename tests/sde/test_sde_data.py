"""Reading task rows from JSONL and BIO/CoNLL files, and the errors bad input gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_tuning.sde.data import bio_to_spans, check_row, read_task_rows
from llm_tuning.sde.tasks import DataError, load_task

ASSETS = Path(__file__).parents[1] / "assets" / "sde"


def test_read_jsonl_fills_every_slot_and_keeps_evidence():
    rows = read_task_rows(ASSETS / "masa_tiny.jsonl", load_task("masa_d1"))
    assert len(rows) == 4
    assert rows[0]["labels"]["食品评价"] == "正面" and rows[0]["labels"]["饮品评价"] == "未提及"
    assert rows[0]["evidence"] == {"食品评价": "菜品味道很棒", "价格水平": "价格太贵了"}
    assert set(rows[2]["labels"].values()) == {"未提及"}
    assert rows[3]["labels"]["饮品评价"] == "正面" and rows[3]["labels"]["卫生情况"] == "负面"  # 1 and "-1"
    assert list(rows[1]["labels"]) == list(load_task("masa_d1").slots)


def test_read_json_list(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"text": "a b", "labels": {"protein": "a"}}]), encoding="utf-8")
    assert read_task_rows(path, load_task("genia"))[0]["labels"]["protein"] == ["a"]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (
            '{"text": "x", "labels": {"食品评价": "很好"}}',
            "field 'labels.食品评价': '很好' is not a label of task masa_d1",
        ),
        ('{"text": "x", "labels": {"环境": "正面"}}', "'环境', not a slot of task masa_d1; slots: 食品评价"),
        ('{"labels": {}}', "field 'text' must be a non-empty string"),
        ('{"text": "x", "labels": {}, "evidence": {"环境": "y"}}', "field 'evidence' has slot '环境'"),
        ('{"text": "x", "labels": {}, "evidence": ["y"]}', "field 'evidence' must map slot -> text"),
        ('{"text": "x", "labels": ', "not valid JSON"),
        ('["x"]', "expected an object"),
    ],
)
def test_bad_jsonl_rows_name_file_line_and_field(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "labels": {}}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_task_rows(path, load_task("masa_d1"))
    assert f"{path}:3" in str(err.value)
    assert needle in str(err.value)


def test_label_errors_list_valid_labels(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "x", "labels": {"食品评价": "好"}}\n', encoding="utf-8")
    with pytest.raises(DataError, match="valid: 正面, 中性, 负面, 未提及, 1, 0, -1, -2"):
        read_task_rows(path, load_task("masa_d1"))


def test_read_bio_rows():
    rows = read_task_rows(ASSETS / "genia_tiny.bio", load_task("genia"))
    assert [r["text"] for r in rows] == [
        "IL-2 gene expression requires NF-kappa B in T cells .",
        "The Jurkat line expresses c-fos mRNA and IL-2 , IL-4 .",
        "No entities here .",
    ]
    assert rows[0]["labels"] == {
        "DNA": ["IL-2 gene"],
        "RNA": [],
        "protein": ["NF-kappa B"],
        "cell_type": ["T cells"],
        "cell_line": [],
    }
    assert rows[1]["labels"]["protein"] == ["IL-2", "IL-4"] and rows[1]["labels"]["RNA"] == ["c-fos mRNA"]
    assert all(v == [] for v in rows[2]["labels"].values())


def test_read_space_separated_conll():
    rows = read_task_rows(ASSETS / "wnut_tiny.conll", load_task("wnut16"))
    assert rows[0]["labels"]["geo-loc"] == ["New York"] and rows[0]["labels"]["company"] == ["Apple"]
    assert rows[1]["text"] == "lol"


def test_bio_for_chinese_joins_without_spaces(tmp_path):
    path = tmp_path / "zh.bio"
    path.write_text("张\tB-人名\n三\tI-人名\n来\tO\n了\tO\n", encoding="utf-8")
    task = load_task(_zh_task(tmp_path))
    assert read_task_rows(path, task) == [{"text": "张三来了", "labels": {"人名": ["张三"], "地名": []}}]


def _zh_task(tmp_path: Path) -> Path:
    path = tmp_path / "zh_ner.yaml"
    path.write_text("name: zh_ner\nkind: extraction\nlanguage: zh\nslots: [人名, 地名]\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ("a\tO\nb\tB-gene\n", 2, "tag 'B-gene' names type 'gene', not a type of task genia; types: DNA, RNA"),
        ("a\tO\n\nb\tX-protein\n", 3, "tag 'X-protein' is not valid; use O, B-TYPE or I-TYPE"),
        ("a\tO\nlonely\n", 2, "expected 'token<TAB>tag'"),
    ],
)
def test_bad_bio_lines(tmp_path, content, line, needle):
    path = tmp_path / "bad.bio"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_task_rows(path, load_task("genia"))
    assert f"{path}:{line}:" in str(err.value) and needle in str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_task_rows(tmp_path / "missing.jsonl", load_task("genia"))
    odd = tmp_path / "rows.csv"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unknown file type '.csv'"):
        read_task_rows(odd, load_task("genia"))
    with pytest.raises(DataError, match="masa_d1 is a sentiment task, use JSONL"):
        read_task_rows(ASSETS / "genia_tiny.bio", load_task("masa_d1"))


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        (["B-A", "I-A", "O", "B-B"], [("A", 0, 2), ("B", 3, 4)]),
        (["B-A", "B-A", "I-A"], [("A", 0, 1), ("A", 1, 3)]),
        (["I-A", "I-A", "I-B"], [("A", 0, 2), ("B", 2, 3)]),  # IOB1: I- without B- starts a span
        (["O", "O"], []),
        ([], []),
    ],
)
def test_bio_to_spans(tags, spans):
    assert bio_to_spans(tags) == spans


def test_check_row_keeps_other_fields():
    row = check_row(load_task("genia"), {"id": 7, "text": "x", "labels": {}})
    assert row["id"] == 7 and row["labels"]["DNA"] == []
