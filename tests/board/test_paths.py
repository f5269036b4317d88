"""The board uses files under its working folder only: ../, absolute paths and symlinks out are refused."""

from __future__ import annotations

import os

import pytest
from board_support import client

from llm_tuning.board.paths import PathRefused, inside, list_files


@pytest.fixture()
def outside(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "rows.jsonl").write_text('{"prompt": "p", "target": "t"}\n')
    (secret / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return secret


def test_inside_refuses_escapes(workdir, outside):
    os.symlink(outside, workdir / "link")
    assert inside(workdir, "data/train.jsonl") == (workdir / "data" / "train.jsonl").resolve()
    assert inside(workdir, str(workdir / "data")) == (workdir / "data").resolve()
    for bad in (
        "../secret/rows.jsonl",
        str(outside / "rows.jsonl"),
        "link/rows.jsonl",
        "data/../../secret",
        "",
        "/",
    ):
        with pytest.raises(PathRefused):
            inside(workdir, bad)
    assert not any(f.startswith("link") for f in list_files(workdir))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_every_route_refuses_a_path_out(workdir, outside, how):
    os.symlink(outside, workdir / "link")
    base = {"dotdot": "../secret", "absolute": str(outside), "symlink": "link"}[how]
    api = client(workdir)
    refused = [
        api.post("/api/data/preview", json={"path": f"{base}/rows.jsonl"}),
        api.get("/api/file", params={"path": f"{base}/plot.png"}),
        api.get("/api/rows", params={"path": f"{base}/rows.jsonl"}),
        api.get("/api/report", params={"path": base}),
        api.post("/api/recipe/load", json={"path": f"{base}/r.yaml"}),
        api.post("/api/recipe/save", json={"path": f"{base}/new.yaml", "values": {}}),
        api.post("/api/chat/compare", json={"model": "tiny", "adapters": [{"path": base}], "prompt": "hi"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
    assert all("outside the working folder" in r.json()["error"] for r in refused)
    job = api.post("/api/jobs", json={"command": "train", "values": {"data": [f"{base}/rows.jsonl"]}})
    assert job.status_code == 400 and "--data" in job.json()["error"]
    assert not (outside / "new.yaml").exists() and sorted(p.name for p in outside.iterdir()) == [
        "plot.png",
        "rows.jsonl",
    ]


def test_upload_stays_in_uploads_and_never_overwrites(workdir):
    api = client(workdir)
    first = api.post(
        "/api/upload", json={"name": "../../evil.jsonl", "text": '{"prompt": "a", "target": "b"}\n'}
    )
    assert first.status_code == 200 and first.json()["path"] == "uploads/evil.jsonl"
    again = api.post("/api/upload", json={"name": "evil.jsonl", "text": "other"})
    assert again.status_code == 409
    assert (workdir / "uploads" / "evil.jsonl").read_text().startswith('{"prompt"')
