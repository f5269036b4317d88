"""The Data, Evaluate and SDE tabs' routes: rows as `tokenize` reads them, eval and grid reports, predictions."""

from __future__ import annotations

import json

import pytest
from board_support import client, wait_job

from llm_tuning.board.data_view import histogram, row_format
from llm_tuning.board.jobs import JobManager


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_preview_detects_formats_marks_the_trained_span_and_lists_bad_rows(workdir):
    write_rows(workdir / "data" / "mixed.jsonl", [
        {"q": "What is 1 + 2?", "a": "1 + 2 = 3"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hey"}]},
        {"instruction": "add", "input": "2 and 2", "output": "4"},
        {"q": "no answer here"},
        {"question": "wrong fields", "answer": "x"},
        {"q": "What is " + "9 + 9 " * 40 + "?", "a": "long"},
    ])  # fmt: skip
    body = {
        "path": "data/mixed.jsonl",
        "model": "tiny",
        "prompt_key": "q",
        "target_key": "a",
        "max_seq_length": 40,
    }
    r = client(workdir).post("/api/data/preview", json=body).json()
    assert r["rows"] == 7 and r["formats"] == {"pairs": 2, "messages": 1, "sharegpt": 1, "alpaca": 1}
    assert [b["row"] for b in r["bad"]] == [5, 6] and r["bad_count"] == 2
    assert r["bad"][0]["error"].startswith(
        "data/mixed.jsonl, row 5, field 'a'"
    )  # the CLI's message, the page's path
    assert "pass --prompt_key/--target_key" in r["bad"][1]["error"]
    first = r["samples"][0]["segments"]
    assert [s["text"] for s in first if s["trained"]] == ["1 + 2 = 3<|im_end|>"]
    assert "What is 1 + 2?" in "".join(s["text"] for s in first if not s["trained"])
    assert r["overlength"] == 1 and r["longest"] > 40 and sum(b["count"] for b in r["histogram"]) == 5
    assert {"q", "a", "messages", "instruction"} <= set(r["fields"])


def test_preview_of_a_broken_file_names_the_line(workdir):
    (workdir / "data" / "broken.jsonl").write_text('{"q": "a", "a": "b"}\n{"q": \n', encoding="utf-8")
    r = client(workdir).post("/api/data/preview", json={"path": "data/broken.jsonl", "model": "tiny", "prompt_key": "q",
                                                        "target_key": "a"}).json()  # fmt: skip
    message = r.get("file_error") or r.get("error")
    assert message.startswith("data/broken.jsonl, row 2") and str(workdir) not in message


def test_histogram_and_formats():
    bins = histogram([1, 2, 3, 10, 10], bins=5)
    assert sum(b["count"] for b in bins) == 5 and bins[0]["from"] == 1 and bins[-1]["to"] >= 10
    assert row_format({"instruction": "i", "output": "o"}, "prompt") == "alpaca" and histogram([]) == []


def test_sde_report_images_and_predictions(workdir):
    grid = workdir / "outputs" / "sde"
    (grid / "inst_last").mkdir(parents=True)
    (grid / "report.md").write_text(
        "# SDE grid\n\n| design | f1 |\n|---|---|\n| inst_last | 0.5 |\n", encoding="utf-8"
    )
    (grid / "report.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    write_rows(grid / "inst_last" / "predictions.jsonl", [{"prompt": "p", "prediction": "x", "target": "y"}])
    api = client(workdir)
    assert api.get("/api/reports").json()["sde"] == ["outputs/sde"]
    report = api.get("/api/report", params={"path": "outputs/sde"}).json()
    assert report["markdown"].startswith("# SDE grid") and report["images"] == ["outputs/sde/report.png"]
    assert report["predictions"] == ["outputs/sde/inst_last/predictions.jsonl"]
    image = api.get("/api/file", params={"path": "outputs/sde/report.png"})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    rows = api.get("/api/rows", params={"path": report["predictions"][0]}).json()["rows"]
    assert rows == [{"prompt": "p", "prediction": "x", "target": "y"}]
    assert api.get("/api/file", params={"path": "outputs/sde/inst_last/predictions.jsonl"}).status_code == 404


def test_recipe_save_then_load(workdir):
    api = client(workdir)
    values = {"data": ["data/train.jsonl"], "max_steps": "3", "packing": False}
    assert api.post("/api/recipe/save", json={"path": "recipes/a.yaml", "values": values}).json() == {
        "path": "recipes/a.yaml"
    }
    again = api.post("/api/recipe/save", json={"path": "recipes/a.yaml", "values": {}})
    assert again.status_code == 409 and "max_steps: 3" in (workdir / "recipes/a.yaml").read_text()
    loaded = api.post("/api/recipe/load", json={"path": "recipes/a.yaml"}).json()["values"]
    assert loaded == {"data": ["data/train.jsonl"], "max_steps": 3, "packing": False}
    (workdir / "recipes/bad.yaml").write_text("max_stepz: 3\n")
    bad = api.post("/api/recipe/load", json={"path": "recipes/bad.yaml"})
    assert bad.status_code == 400 and "max_stepz" in bad.json()["error"]


@pytest.mark.slow
def test_eval_job_writes_the_report_the_tab_shows(workdir):
    import tiny_models

    tiny_models.random_adapter(
        str(workdir / "tiny"), workdir / "weights" / "a", 4, ["q_proj", "v_proj"], 1, alpha=4
    )
    api = client(workdir)
    values = {"model": "tiny", "data_path": "data/train.jsonl", "prompt_key": "q", "target_key": "a",
              "adapter": ["weights/a"], "output_dir": "evals/a", "max_new_tokens": "4", "limit": "4"}  # fmt: skip
    job = wait_job(
        JobManager(workdir), api.post("/api/jobs", json={"command": "eval", "values": values}).json()["id"]
    )
    assert job["status"] == "done", job["log_tail"]
    assert api.get("/api/reports").json()["eval"] == ["evals/a"]
    report = api.get("/api/report", params={"path": "evals/a"}).json()
    assert set(report["json"]["scores"]) == {"base", "a"} and "| model | exact_match" in report["markdown"]
