"""tokenize never deletes what it did not write, and its workers die with it (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.data.tokenize import MANIFEST, TokenizeConfig, run

SRC = Path(__file__).resolve().parents[2] / "src"


def write_rows(path: Path, n: int = 4, pad: str = "") -> Path:
    rows = [{"q": f"What is {i} + 1?{pad}", "a": f"{i} + 1 = {i + 1}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tok(model: str, path: Path, **flags) -> TokenizeConfig:
    return TokenizeConfig(input_file=str(path), model=model, prompt_key="q", target_key="a", **flags)


def test_a_folder_with_a_users_file_is_refused_and_kept(tiny_model, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match=f"{out}.*not written by `llm-tuning tokenize`"):
        run(tok(tiny_model, data, output_dir=str(out)))
    assert (out / "thesis.tex").read_text() == "years of work"


def test_our_folder_with_a_users_file_added_is_refused(tiny_model, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "set"
    run(tok(tiny_model, data, output_dir=str(out)))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="also holds 'notes.txt'"):
        run(tok(tiny_model, data, output_dir=str(out), prompt_loss=True))
    assert (out / "notes.txt").exists() and (out / MANIFEST).exists()


def test_our_folder_and_an_empty_one_are_written(tiny_model, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    (tmp_path / "empty").mkdir()
    assert run(tok(tiny_model, data, output_dir=str(tmp_path / "empty"))).rows == 4
    again = run(tok(tiny_model, data, output_dir=str(tmp_path / "empty"), prompt_loss=True))
    assert not again.reused and json.loads((again.path / MANIFEST).read_text())["flags"]["prompt_loss"]


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/tmp/x", "../data", "a\\b"])
def test_save_names_that_escape_the_folder_are_refused(tiny_model, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    data = write_rows(Path("data") / "rows.jsonl")
    with pytest.raises(ConfigError, match="--save_name"):
        run(tok(tiny_model, data, save_name=name))
    assert data.exists() and os.listdir("data") == ["rows.jsonl"]


@pytest.mark.parametrize("where", ["parent", "itself"])
def test_an_output_folder_holding_the_input_is_refused(tiny_model, tmp_path, where):
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path if where == "parent" else data
    expected = "holds the input file" if where == "parent" else "is a file; give a folder"  # checked first
    with pytest.raises(ConfigError, match=expected):
        run(tok(tiny_model, data, output_dir=str(out)))
    assert data.read_text().count("\n") == 4


def test_a_file_as_output_folder_is_refused(tiny_model, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    (tmp_path / "out").write_text("a file")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        run(tok(tiny_model, data, output_dir=str(tmp_path / "out")))


def test_a_folder_without_manifest_is_not_reused_and_a_leftover_temp_is_ignored(tiny_model, tmp_path):
    """What a kill leaves (a temp folder; a dataset without its manifest) is never taken as complete."""
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "set"
    run(tok(tiny_model, data, output_dir=str(out)))
    (out / MANIFEST).unlink()  # a half-written set: refused, not reused
    with pytest.raises(ConfigError, match="no llm_tuning_manifest.json"):
        run(tok(tiny_model, data, output_dir=str(out)))
    partial = tmp_path / ".set2.abc.partial"
    partial.mkdir()
    result = run(tok(tiny_model, data, output_dir=str(tmp_path / "set2")))
    assert not result.reused and result.rows == 4


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow  # ~10 s: reading and tokenizing a file big enough to kill it midway
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are used on Linux only")
def test_sigkill_of_tokenize_takes_its_workers_with_it(tiny_model, tmp_path):
    data = write_rows(tmp_path / "big.jsonl", n=20000, pad=" the quick brown fox" * 4)
    cmd = [sys.executable, "-m", "llm_tuning.cli", "tokenize", "--model", tiny_model, "--input_file", str(data),
           "--prompt_key", "q", "--target_key", "a", "--num_proc", "2", "--batch_rows", "100",
           "--output_dir", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "tokenize ended before its workers started: make the file bigger"
            time.sleep(0.05)
        assert len(workers) >= 2
        time.sleep(0.5)  # let them get to work
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "workers outlived their killed parent"
    assert not (tmp_path / "out").exists()  # nothing half-written at the output path
