"""Task metrics for SDE tasks, shared by `predict` and the SDE runner; they score as the original scripts do.

    from llm_tuning.sde.metrics import score_predictions
    report = score_predictions(load_task("masa_d1"), parse_design("es_sde"), rows)  # rows: {prompt, target, prediction}
    report["metrics"]["kappa"], report["format_error_rate"], report["failed"]

Sentiment (MASA): every answer is parsed into {aspect: label} with soft repair (see sde/parsers.py).
  Acc_ALL: share of aspect slots right; Acc_sentence: share of rows with every aspect right; weighted kappa on
  the 4x4 confusion matrix (rows gold, columns predicted, order positive, neutral, negative, unmentioned):
  po = sum(W*M)/N, pe = sum(W_ij * row_i * col_j)/N^2, kappa = (po - pe)/(1 - pe), with W = MASA_WEIGHTS.
  Undefined values (0/0) are None. Scores are rounded to 4 decimals.
Extraction (NER, events): micro precision / recall / F1 over (type, span) pairs, lowercased and stripped, as
  the MAVEN scorer: duplicates are dropped from a prediction before matching; TP = kept pairs found in the gold
  pairs, FP = all parsed predicted pairs - TP, FN = gold pairs - TP. Soft mode first replaces a predicted span
  by the most similar gold span of the same row when difflib's ratio is > 0.5 (two predictions may then both
  match one gold pair, as in the original).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from llm_tuning.sde.designs import Design, design_spec
from llm_tuning.sde.parsers import parse_output
from llm_tuning.sde.tasks import Task

log = logging.getLogger(__name__)

# Agreement weights of the MASA scorer; rows gold, columns predicted: positive, neutral, negative, unmentioned.
MASA_WEIGHTS = ((1.0, 0.5, 0.0, 0.5), (0.67, 1.0, 0.67, 0.67), (0.0, 0.5, 1.0, 0.5), (0.5, 0.67, 0.5, 1.0))
SOFT_THRESHOLD = 0.5


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def confusion_matrix(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Counts M[i][j] of gold label i predicted as label j."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        matrix[index[g]][index[p]] += 1
    return matrix


def weighted_kappa(
    matrix: Sequence[Sequence[int]], weights: Sequence[Sequence[float]] = MASA_WEIGHTS
) -> float | None:
    """Weighted kappa of a confusion matrix (rows gold, columns predicted); None when it is undefined."""
    n = sum(map(sum, matrix))
    if n == 0:
        return None
    size = len(matrix)
    rows = [sum(matrix[i]) for i in range(size)]
    cols = [sum(matrix[i][j] for i in range(size)) for j in range(size)]
    po = sum(weights[i][j] * matrix[i][j] for i in range(size) for j in range(size)) / n
    pe = sum(weights[i][j] * rows[i] * cols[j] for i in range(size) for j in range(size)) / n**2
    if pe == 1:
        return None
    return (po - pe) / (1 - pe)


def _per_label(matrix: list[list[int]], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision and recall of each label, with how often it was predicted and how often it is gold."""
    out = {}
    for i, label in enumerate(labels):
        predicted = sum(row[i] for row in matrix)
        gold = sum(matrix[i])
        out[label] = {
            "precision": _round(matrix[i][i] / predicted) if predicted else None,
            "recall": _round(matrix[i][i] / gold) if gold else None,
            "predicted": predicted,
            "gold": gold,
        }
    return out


def _accuracy_block(gold: list[str], pred: list[str], labels: Sequence[str]) -> dict[str, Any]:
    matrix = confusion_matrix(gold, pred, labels)
    correct = sum(g == p for g, p in zip(gold, pred, strict=True))
    return {
        "acc": _round(correct / len(gold)) if gold else None,
        "correct": correct,
        "total": len(gold),
        "kappa": _round(weighted_kappa(matrix)),
        "matrix": matrix,
        "per_label": _per_label(matrix, labels),
    }


def sentiment_scores(task: Task, gold: list[dict[str, str]], pred: list[dict[str, str]]) -> dict[str, Any]:
    """Acc_ALL, Acc_sentence, weighted kappa and per-label scores; `per_slot` breaks them down by aspect."""
    labels = task.label_words
    all_gold = [row[s] for row in gold for s in task.slots]
    all_pred = [row[s] for row in pred for s in task.slots]
    overall = _accuracy_block(all_gold, all_pred, labels)
    sentences = sum(all(g[s] == p[s] for s in task.slots) for g, p in zip(gold, pred, strict=True))
    metrics = {
        "acc_all": overall["acc"],
        "acc_sentence": _round(sentences / len(gold)) if gold else None,
        "kappa": overall["kappa"],
        "correct_slots": overall["correct"],
        "slots": overall["total"],
        "correct_sentences": sentences,
        "matrix": overall["matrix"],
        "labels": list(labels),
        "per_label": overall["per_label"],
    }
    per_slot = {s: _accuracy_block([g[s] for g in gold], [p[s] for p in pred], labels) for s in task.slots}
    return {"metrics": metrics, "per_slot": per_slot}


def prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    """Precision, recall and F1 (0 where undefined, as the original scorers) with the counts."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}


def _pairs(values: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(slot.lower().strip(), span.lower().strip()) for slot, spans in values.items() for span in spans]


def match_row(gold: dict[str, list[str]], pred: dict[str, list[str]], soft: bool) -> tuple[list, list, list]:
    """(gold pairs, parsed predicted pairs, correct pairs) of one row, by the MAVEN scorer's rules."""
    gold_pairs, pred_pairs = _pairs(gold), _pairs(pred)
    kept = list(dict.fromkeys(pred_pairs))
    if soft and gold_pairs:
        gold_spans = [span for _, span in gold_pairs]
        for i, (kind, span) in enumerate(kept):
            ratios = [SequenceMatcher(a=span, b=g).ratio() for g in gold_spans]
            best = max(ratios)
            if best > SOFT_THRESHOLD:
                kept[i] = (kind, gold_spans[ratios.index(best)])
    correct = [pair for pair in kept if pair in gold_pairs]
    return gold_pairs, pred_pairs, correct


def _count(pairs: list[tuple[str, str]], kind: str) -> int:
    return sum(1 for pair in pairs if kind in ("all", pair[0]))


def extraction_scores(
    task: Task, gold: list[dict[str, list[str]]], pred: list[dict[str, list[str]]]
) -> dict[str, Any]:
    """Micro P/R/F1, hard and soft, overall and per type (`per_slot`)."""
    slots = [s.lower().strip() for s in task.slots]
    counts = {mode: {s: [0, 0, 0] for s in [*slots, "all"]} for mode in ("hard", "soft")}
    for g, p in zip(gold, pred, strict=True):
        for mode in ("hard", "soft"):
            gold_pairs, pred_pairs, correct = match_row(g, p, soft=mode == "soft")
            for key in [*slots, "all"]:
                tp = _count(correct, key)
                c = counts[mode][key]
                c[0] += tp
                c[1] += _count(pred_pairs, key) - tp
                c[2] += _count(gold_pairs, key) - tp
    metrics = {mode: prf(*counts[mode]["all"]) for mode in ("hard", "soft")}
    per_slot = {
        slot: {mode: prf(*counts[mode][key]) for mode in ("hard", "soft")}
        for slot, key in zip(task.slots, slots, strict=True)
    }
    return {"metrics": metrics, "per_slot": per_slot}


def score_predictions(task: Task, design: Design, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Score predictions against their targets: the task's metrics, a per-slot breakdown and format errors.

    Each row needs `target` (parsed as the gold answer, under `design`) and `prediction`. Returns
    {task, design, rows, metrics, per_slot, format_errors, format_error_rate, failed}, where `failed` lists
    {index, prediction, errors} of the predictions that did not parse (still scored after soft repair).
    """
    if not rows:
        raise ValueError("no rows to score")
    gold, pred, failed, bad_targets = [], [], [], []
    for i, row in enumerate(rows):
        for key in ("target", "prediction"):
            if key not in row:
                raise ValueError(f"row {i}: field {key!r} is missing; rows need 'target' and 'prediction'")
        target = parse_output(task, design, row["target"] or "")
        if target.format_error:
            bad_targets.append((i, target.errors))
        prediction = parse_output(task, design, row["prediction"] or "")
        if prediction.format_error:
            failed.append({"index": i, "prediction": row["prediction"], "errors": prediction.errors})
        gold.append(target.values)
        pred.append(prediction.values)
    if bad_targets:
        i, errors = bad_targets[0]
        raise ValueError(
            f"{len(bad_targets)} target(s) do not parse under design {design_spec(design)!r} (is it the design the "
            f"rows were rendered with?); row {i}: {'; '.join(errors)}"
        )
    scores = (
        sentiment_scores(task, gold, pred)
        if task.kind == "sentiment"
        else extraction_scores(task, gold, pred)
    )
    log.info("scored %d rows of %s: %d format errors", len(rows), task.name, len(failed))
    return {
        "task": task.name,
        "design": design_spec(design),
        "rows": len(rows),
        **scores,
        "format_errors": len(failed),
        "format_error_rate": round(len(failed) / len(rows), 4),
        "failed": failed,
    }
