"""SDE task metrics against hand-computed values and against numbers published by the original scripts."""

from __future__ import annotations

import pytest

from llm_tuning.sde.designs import PRESETS, Design, parse_design, render_target
from llm_tuning.sde.metrics import (
    confusion_matrix,
    extraction_scores,
    match_row,
    prf,
    score_predictions,
    sentiment_scores,
    weighted_kappa,
)
from llm_tuning.sde.synthetic import make_masa_rows
from llm_tuning.sde.tasks import Task, load_task, normalize_labels

TWO = Task(name="two", kind="sentiment", language="zh", slots=("甲", "乙"))
GENIA = load_task("genia")


@pytest.mark.parametrize(
    ("matrix", "kappa"),
    [
        # LLM-Tuning SDE/MASA/result_internlm-chat/..._soft.txt: matrix_ALL and four per-aspect matrices
        ([[92, 1, 2, 5], [12, 3, 4, 3], [5, 0, 7, 3], [4, 0, 1, 158]], 0.7639),
        ([[36, 0, 0, 0], [6, 3, 1, 0], [2, 0, 2, 0], [0, 0, 0, 0]], 0.5682),
        ([[12, 0, 0, 0], [3, 0, 0, 0], [1, 0, 0, 1], [2, 0, 0, 31]], 0.7123),
        ([[19, 0, 1, 2], [0, 0, 3, 1], [2, 0, 3, 0], [1, 0, 1, 17]], 0.6516),
        ([[2, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 47]], 0.852),
    ],
)
def test_weighted_kappa_reproduces_published_numbers(matrix, kappa):
    assert round(weighted_kappa(matrix), 4) == kappa


def test_kappa_undefined_cases():
    assert weighted_kappa([[0] * 4 for _ in range(4)]) is None
    assert weighted_kappa([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]]) is None  # pe = 1


def test_two_row_masa_scores_by_hand():
    gold = [normalize_labels(TWO, {"甲": "正面"}), normalize_labels(TWO, {"甲": "负面", "乙": "中性"})]
    pred = [normalize_labels(TWO, {"甲": "正面"}), normalize_labels(TWO, {"甲": "中性", "乙": "中性"})]
    scores = sentiment_scores(TWO, gold, pred)
    m = scores["metrics"]
    # M (gold rows, predicted columns): 正->正, 未->未, 负->中, 中->中
    assert m["matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    # po = (1 + 1 + .5 + 1) / 4 = .875; rows (1,1,1,1), cols (1,2,0,1):
    # pe = (2.5 + 3.34 + 1.5 + 2.84) / 16 = .63625; kappa = .23875 / .36375 = .65636
    assert m["kappa"] == 0.6564
    assert m["acc_all"] == 0.75 and m["acc_sentence"] == 0.5
    assert (m["correct_slots"], m["slots"], m["correct_sentences"]) == (3, 4, 1)
    assert m["per_label"]["中性"] == {"precision": 0.5, "recall": 1.0, "predicted": 2, "gold": 1}
    assert m["per_label"]["负面"] == {"precision": None, "recall": 0.0, "predicted": 0, "gold": 1}
    assert scores["per_slot"]["甲"]["acc"] == 0.5 and scores["per_slot"]["乙"]["acc"] == 1.0
    assert scores["per_slot"]["乙"]["matrix"][1][1] == 1 and scores["per_slot"]["乙"]["total"] == 2


def test_confusion_matrix_order():
    assert confusion_matrix(["a", "b"], ["b", "b"], ["a", "b"]) == [[0, 1], [0, 1]]


def test_prf():
    assert prf(2, 3, 1) == {"precision": 0.4, "recall": 0.6667, "f1": 0.5, "tp": 2, "fp": 3, "fn": 1}
    assert prf(0, 0, 0)["f1"] == 0.0


def ner(**spans: list[str]) -> dict:
    return normalize_labels(GENIA, spans)


def test_extraction_hard_and_soft_by_hand():
    gold = [ner(protein=["IL-2", "NF-kappa B"], DNA=["IL-2 gene"])]
    pred = [ner(protein=["il-2", "IL-2", "NF-kB"], DNA=["IL-2 gene"], RNA=["mRNA"])]
    scores = extraction_scores(GENIA, gold, pred)
    # hard: 5 parsed pairs (a duplicate il-2 among them), 4 kept; il-2 and il-2 gene match
    assert scores["metrics"]["hard"] == prf(2, 3, 1)
    # soft: "nf-kb" vs "nf-kappa b": 5 matching characters of 5 + 10 -> ratio 2 * 5 / 15 = .67 > .5
    assert scores["metrics"]["soft"] == prf(3, 2, 0)
    per = scores["per_slot"]
    assert per["protein"]["hard"] == prf(1, 2, 1) and per["DNA"]["hard"] == prf(1, 0, 0)
    assert per["RNA"]["hard"] == prf(0, 1, 0) and per["cell_line"]["hard"] == prf(0, 0, 0)
    for mode in ("hard", "soft"):
        for count in ("tp", "fp", "fn"):
            assert sum(p[mode][count] for p in per.values()) == scores["metrics"][mode][count]


def test_soft_match_keeps_dissimilar_spans_and_rows_without_gold():
    gold_pairs, pred_pairs, correct = match_row(
        ner(protein=["IL-2"]), ner(protein=["tumour necrosis"]), soft=True
    )
    assert correct == [] and pred_pairs == [("protein", "tumour necrosis")]
    assert match_row(ner(), ner(protein=["x"]), soft=True) == ([], [("protein", "x")], [])


def test_score_predictions_masa_end_to_end():
    task = load_task("masa_d1")
    design = Design()
    rows = make_masa_rows(5, task, seed=0)
    scored = [
        {"prompt": "", "target": render_target(task, design, r), "prediction": render_target(task, design, r)}
        for r in rows
    ]
    scored[1]["prediction"] = "食品评价正面"  # breaks the format: everything unmentioned
    scored[2]["prediction"] = ""
    report = score_predictions(task, design, scored)
    assert report["task"] == "masa_d1" and report["design"] == "es_sde" and report["rows"] == 5
    assert report["format_errors"] == 2 and report["format_error_rate"] == 0.4
    assert [f["index"] for f in report["failed"]] == [1, 2]
    assert report["failed"][1]["errors"] == ["empty output"]
    gold = [r["labels"] for r in rows]
    right = sum(g[s] == "未提及" for g in gold[1:3] for s in task.slots) + 18
    assert report["metrics"]["acc_all"] == round(right / 30, 4)
    assert set(report["per_slot"]) == set(task.slots)


def test_score_predictions_extraction():
    design = PRESETS["heuristic"]
    rows = [
        {"target": '["protein", "IL-2"]\n["DNA", "IL-2 gene"]', "prediction": '["protein", "IL-2"]'},
        {"target": "[]", "prediction": '["protein", "IL-2"]\nnonsense'},
    ]
    report = score_predictions(GENIA, design, rows)
    assert report["metrics"]["hard"] == prf(1, 1, 1)
    assert report["format_errors"] == 1 and report["failed"][0]["index"] == 1


def test_score_predictions_perfect_for_every_preset():
    task = load_task("masa_en")
    rows = make_masa_rows(4, task, seed=1)
    for name, design in PRESETS.items():
        scored = [
            {"target": render_target(task, design, r), "prediction": render_target(task, design, r)}
            for r in rows
        ]
        m = score_predictions(task, design, scored)["metrics"]
        assert (m["acc_all"], m["acc_sentence"]) == (1.0, 1.0), name


def test_score_predictions_errors():
    task = load_task("masa_d1")
    with pytest.raises(ValueError, match="no rows"):
        score_predictions(task, Design(), [])
    with pytest.raises(ValueError, match="row 0: field 'prediction' is missing"):
        score_predictions(task, Design(), [{"target": "食品评价：正面"}])
    with pytest.raises(ValueError, match="1 target\\(s\\) do not parse under design 'json'"):
        score_predictions(task, parse_design("json"), [{"target": "食品评价：正面", "prediction": ""}])
