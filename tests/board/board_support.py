"""A working folder for the board: the tiny model copied in (the board reads only under it) and a data file."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

ROWS = [{"q": f"What is {a} + {b}?", "a": f"{a} + {b} = {a + b}"} for a in range(4) for b in range(3)]


@pytest.fixture()
def workdir(tmp_path, tiny_model) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(tiny_model, folder / "tiny")
    (folder / "data").mkdir()
    (folder / "data" / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8"
    )
    return folder


def client(workdir: Path, **cfg):
    from starlette.testclient import TestClient

    from llm_tuning.board.app import BoardConfig, build_app

    return TestClient(
        build_app(BoardConfig(workdir=str(workdir), model="tiny", **cfg)), base_url="http://127.0.0.1"
    )


def wait_job(
    manager, job_id: str, statuses=("done", "failed", "stopped", "lost"), timeout: float = 120
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = manager.status(job_id)
        if status["status"] in statuses:
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status['status']}:\n{status['log_tail']}"
        time.sleep(0.2)
