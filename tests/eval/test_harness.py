"""`llm-tuning eval --tasks` through lm-eval on a local task (a task YAML over a small local file, no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llm_tuning.cli import main  # noqa: E402
from llm_tuning.eval.evaluate import EvalConfig, run  # noqa: E402

ASSET = Path(__file__).parent.parent / "assets" / "lm_eval" / "tiny_local_mc.yaml"
ROWS = [
    {"question": "What is 1 + 2?", "choices": ["3", "4"], "label": 0},
    {"question": "the quick brown", "choices": ["fox", "dog"], "label": 0},
    {"question": "What is 9 x 8?", "choices": ["71", "72"], "label": 1},
]


@pytest.fixture()
def task_dir(tmp_path) -> Path:
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / ASSET.name).write_text(ASSET.read_text().replace("DATA_FILE", str(data)))
    return folder


def test_lm_eval_local_task_for_base_and_adapters(tiny_model, adapters, task_dir, tmp_path):
    result = run(EvalConfig(model=tiny_model, tasks="tiny_local_mc", task_path=str(task_dir), device="cpu",
                            adapter=[f"zero={adapters['zero']}", f"rand={adapters['rand']}"],
                            output_dir=str(tmp_path / "out")))  # fmt: skip
    scores = result.benchmarks
    assert set(scores) == {"base", "zero", "rand", "mix"}
    accuracy = {n: scores[n]["tiny_local_mc"]["acc"] for n in scores}
    assert all(a in (0, 1 / 3, 2 / 3, 1) for a in accuracy.values())
    assert accuracy["zero"] == accuracy["base"]  # B = 0: the same model, the same lm-eval score
    saved = json.loads((tmp_path / "out" / "benchmarks.json").read_text())
    assert saved["scores"]["base"]["tiny_local_mc"]["acc"] == accuracy["base"]
    assert "tiny_local_mc/acc" in (tmp_path / "out" / "benchmarks.md").read_text()


@pytest.mark.slow  # ~18 s: knowing a task is unknown means indexing lm-eval's ~15k built-in tasks
def test_unknown_task_is_one_clear_error(tiny_model, task_dir, capsys):
    assert (
        main(
            [
                "eval",
                "--model",
                tiny_model,
                "--tasks",
                "tiny_local_mc,no_such_task",
                "--task_path",
                str(task_dir),
            ]
        )
        == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("llm-tuning eval: error: --tasks: unknown task 'no_such_task'"), last
