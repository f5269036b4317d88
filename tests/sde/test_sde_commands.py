"""`sde render`, `sde score` and `sde run` through the CLI, on the tiny random model."""

from __future__ import annotations

import json

import pytest

from llm_tuning.cli import main
from llm_tuning.config import ConfigError
from llm_tuning.data.read import read_rows
from llm_tuning.sde.designs import parse_design, render_sample
from llm_tuning.sde.runner import GridConfig, split_rows
from llm_tuning.sde.runner import run as run_grid
from llm_tuning.sde.synthetic import make_masa_rows
from llm_tuning.sde.tasks import load_task


@pytest.fixture()
def masa_file(tmp_path):
    path = tmp_path / "masa.jsonl"
    rows = make_masa_rows(24, "masa_en", seed=3)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_render_writes_design_rows_with_their_loss_flag(masa_file, tmp_path):
    out = tmp_path / "mi.jsonl"
    assert main(["sde", "render", "--task", "masa_en", "--design", "mi", "--input", str(masa_file),
                 "--output", str(out)]) == 0  # fmt: skip
    rows = read_rows(out)
    first = json.loads(masa_file.read_text().splitlines()[0])
    expected = render_sample(load_task("masa_en"), parse_design("mi"), first)
    assert len(rows) == 24
    assert rows[0]["prompt"] == expected["prompt"] and rows[0]["target"] == expected["target"]
    assert all(r["prompt_loss"] is True for r in rows)


def test_rendered_prompt_loss_reaches_the_labels(masa_file, tmp_path, tiny_model):
    from datasets import load_from_disk

    from llm_tuning.data.tokenize import TokenizeConfig
    from llm_tuning.data.tokenize import run as tokenize

    folders = {}
    for design in ("es_sde", "mi"):
        out = tmp_path / f"{design}.jsonl"
        main(
            [
                "sde",
                "render",
                "--task",
                "masa_en",
                "--design",
                design,
                "--input",
                str(masa_file),
                "--output",
                str(out),
            ]
        )
        folders[design] = tokenize(TokenizeConfig(input_file=str(out), model=tiny_model)).path
    no_mi, mi = (load_from_disk(str(folders[d]))[0] for d in ("es_sde", "mi"))
    assert -100 in no_mi["labels"]
    assert -100 not in mi["labels"]


def test_score_reports_metrics_and_unparsed_rows(tmp_path, capsys):
    task, design = load_task("masa_en"), parse_design("es_sde")
    rows = make_masa_rows(4, "masa_en", seed=1)
    targets = [render_sample(task, design, r)["target"] for r in rows]
    preds = [{"prompt": "p", "target": t, "prediction": t} for t in targets[:3]]
    preds.append({"prompt": "p", "target": targets[3], "prediction": "I think it was nice"})
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in preds), encoding="utf-8")
    assert (
        main(
            [
                "sde",
                "score",
                "--task",
                "masa_en",
                "--predictions",
                str(path),
                "--output",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 format errors (25.00%)" in out
    assert "unparsed row 3" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["correct_sentences"] == 3


def test_score_names_the_missing_field(tmp_path, capsys):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"prompt": "p", "target": "food: positive"}) + "\n", encoding="utf-8")
    assert main(["sde", "score", "--task", "masa_en", "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "'prediction'" in err


def test_design_list_attaches_options_to_the_design_before():
    cfg = GridConfig(data="x.jsonl", designs="es_sde,json,unmentioned=ou,numeric")
    assert cfg.design_list() == [
        parse_design("es_sde"),
        parse_design("json,unmentioned=ou"),
        parse_design("numeric"),
    ]
    with pytest.raises(ConfigError):
        GridConfig(data="x.jsonl", designs="es_sde,nonsense")


def test_split_is_disjoint_and_too_small_data_is_refused():
    rows = [{"i": i} for i in range(10)]
    train, test = split_rows(rows, 6, 4, seed=0)
    assert {r["i"] for r in train}.isdisjoint({r["i"] for r in test})
    assert split_rows(rows, 6, 4, seed=0) == (train, test)
    with pytest.raises(ConfigError, match="needs 11 rows"):
        split_rows(rows, 7, 4, seed=0)


def test_grid_run_reports_every_design_and_skips_done_ones(masa_file, tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "grid"
    cfg = GridConfig(task="masa_en", data=str(masa_file), designs="es_sde,json", train_size=12, test_size=4,
                     model=tiny_model, output_dir=str(out), max_steps=2, batch_size=4, max_new_tokens=8)  # fmt: skip
    result = run_grid(cfg)
    assert [r["design"] for r in result.rows] == ["es_sde", "json"]
    assert result.winner in ("es_sde", "json")
    for name in (
        "report.md",
        "report.json",
        "report.png",
        "es_sde/predictions.jsonl",
        "json/adapter/adapter_config.json",
    ):
        assert (out / name).is_file(), name
    assert len(read_rows(out / "json" / "predictions.jsonl")) == 4

    import llm_tuning.sde.runner as runner

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "run_design", boom)
    again = run_grid(GridConfig(**{**cfg.__dict__, "designs": "es_sde,json,ou"}))
    assert [r.get("error") for r in again.rows] == [None, None, "RuntimeError: out of memory"]
    assert "failed: RuntimeError: out of memory" in (out / "report.md").read_text()
    # other settings are another experiment: a finished design is not reused when --max_steps changes
    changed = run_grid(GridConfig(**{**cfg.__dict__, "max_steps": 3}))
    assert [r.get("error") for r in changed.rows] == ["RuntimeError: out of memory"] * 2
