"""The board's guard (API key, Host, JSON bodies), its page, and bad requests answered with one clear line."""

from __future__ import annotations

import pytest
from board_support import client

KEY = "board-key"


def test_api_key_required_when_set(workdir):
    api = client(workdir, api_key=KEY)
    assert api.get("/").status_code == 200  # the page itself holds nothing; it asks for the key
    for path in ("/api/info", "/api/files", "/api/jobs", "/api/form/train"):
        assert api.get(path).status_code == 401
        assert api.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert api.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    started = api.post("/api/jobs", json={"command": "train", "values": {"data": ["data/train.jsonl"]}})
    assert started.status_code == 401 and not (workdir / ".board").exists()


def test_guard_refuses_other_hosts_origins_and_form_posts(workdir):
    api = client(workdir)
    assert api.get("/api/info", headers={"Host": "evil.example"}).status_code == 403
    assert api.get("/api/info", headers={"Origin": "http://evil.example"}).status_code == 403
    form_post = api.post(
        "/api/jobs", content=b"command=train", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form_post.status_code == 415


def test_page_is_self_contained(workdir):
    page = client(workdir).get("/").text
    assert "<title>llm-tuning board</title>" in page and "<!--board.js-->" not in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    for tab in ("data", "train", "eval", "chat", "sde"):
        assert f'id="tab-{tab}"' in page


def test_form_and_command_line(workdir):
    api = client(workdir)
    form = api.get("/api/form/train").json()
    assert form["groups"][0]["title"] == "essentials"
    line = api.post(
        "/api/command", json={"command": "train", "values": {"data": ["data/train.jsonl"], "max_steps": "3"}}
    )
    assert line.json()["shell"] == "llm-tuning train --data data/train.jsonl --max_steps 3"
    bad = api.post(
        "/api/command", json={"command": "train", "values": {"data": ["data/train.jsonl"], "max_steps": "0"}}
    )
    assert bad.status_code == 400 and "--max_steps must be >= 1" in bad.json()["error"]


@pytest.mark.parametrize("command", ["board", "serve", "rm -rf", "demo"])
def test_only_job_commands_run(workdir, command):
    response = client(workdir).post("/api/jobs", json={"command": command, "values": {}})
    assert response.status_code in (400, 404) and "error" in response.json()


def test_bad_board_flags(workdir, tmp_path):
    import socket

    from llm_tuning.board.app import BoardConfig, check_port_free
    from llm_tuning.config import ConfigError

    with pytest.raises(ConfigError, match="--workdir .*not a folder"):
        BoardConfig(workdir=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="--port must be in 1..65535"):
        BoardConfig(workdir=str(workdir), port=70000)
    with socket.create_server(("127.0.0.1", 0)) as held:
        with pytest.raises(ConfigError, match="cannot listen there"):
            check_port_free("127.0.0.1", held.getsockname()[1])
