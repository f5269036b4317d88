"""training_log.json and training_curves.png: written atomically; no panel for a one-point quantity."""

from __future__ import annotations

import json

from llm_tuning.reporting import _series, panels, write_training_report

RECORDS = [
    {"step": 1, "loss": 2.0, "learning_rate": 0.1},
    {"step": 2, "loss": 1.5, "eval_loss": 1.7},
    {"step": 2, "train_loss": 1.75, "train_runtime": 3.0},  # the run's summary: one point
]


def test_a_quantity_with_one_point_gets_no_panel():
    assert panels(_series(RECORDS)) == ["loss"]  # not eval_loss (one point), not train_loss
    assert panels(_series(RECORDS), ["train_loss", "loss"]) == ["loss"]


def test_the_report_files_are_written_whole(tmp_path):
    tmp_path = tmp_path / "out"
    write_training_report(RECORDS, tmp_path, {"summary": {"train_loss": 1.75}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_curves.png", "training_log.json"]
    assert json.loads((tmp_path / "training_log.json").read_text())["log"] == RECORDS
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
