"""`serve --backend vllm`: the `vllm serve` command built from our flags, the refusals, and the hand-over by exec
(a fake `vllm` on PATH records its argv and PID; no real vLLM here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models

from llm_tuning.config import ConfigError
from llm_tuning.infer import vllm_backend
from llm_tuning.infer.engine import ServeConfig
from llm_tuning.infer.vllm_backend import run_vllm, vllm_command

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vllm")
    return {"math": tiny_models.random_adapter(tiny_model, root / "math", 4, ["q_proj"], 1),
            "style": tiny_models.random_adapter(tiny_model, root / "style", 12, ["v_proj"], 2)}  # fmt: skip


def fake_vllm(folder: Path) -> Path:
    """A `vllm` executable that writes its argv (one per line) and its PID to $RECORD, then exits 0."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "vllm"
    script.write_text(
        '#!/bin/sh\necho "pid $$" > "$RECORD"\nfor a in "$@"; do echo "$a" >> "$RECORD"; done\n'
    )
    script.chmod(0o755)
    return script


def test_the_command_carries_model_adapters_host_port_key_and_origins(tiny_model, adapters, monkeypatch):
    monkeypatch.setattr(vllm_backend, "resolve_model", lambda name: f"/resolved/{name}")
    cfg = ServeConfig(model="smollm2-135m-instruct", adapter=[f"math={adapters['math']}", f"style={adapters['style']}"],
                      backend="vllm", host="0.0.0.0", port=9001, api_key="k3y", dtype="bfloat16",
                      vllm_args="--gpu-memory-utilization 0.4")  # fmt: skip
    argv = vllm_command(cfg, ["vllm"])
    assert argv[:5] == [
        "vllm",
        "serve",
        "/resolved/smollm2-135m-instruct",
        "--served-model-name",
        "smollm2-135m-instruct",
    ]
    lora = argv.index("--lora-modules")
    assert argv[lora + 1 : lora + 3] == [
        f"math={Path(adapters['math']).resolve()}",
        f"style={Path(adapters['style']).resolve()}",
    ]
    flags = dict(zip(argv[lora + 3 :: 2], argv[lora + 4 :: 2], strict=False))
    # rank 12 rounds up to 16, the next rank vLLM accepts; one LoRA slot per adapter so both share a batch
    assert flags["--max-lora-rank"] == "16" and flags["--max-loras"] == "2" and flags["--dtype"] == "bfloat16"
    assert flags["--host"] == "0.0.0.0" and flags["--port"] == "9001" and flags["--api-key"] == "k3y"
    assert json.loads(flags["--allowed-origins"]) == [] and flags["--gpu-memory-utilization"] == "0.4"
    assert "--enable-lora" in argv and "--trust-remote-code" not in argv
    monkeypatch.undo()
    plain = vllm_command(
        ServeConfig(model=tiny_model, backend="vllm", cors_origins=["https://a.example"]), ["vllm"]
    )
    assert plain[2] == tiny_model and "--enable-lora" not in plain and "--api-key" not in plain
    assert json.loads(plain[plain.index("--allowed-origins") + 1]) == ["https://a.example"]


@pytest.mark.parametrize(("flags", "words"), [
    ({"mix": ["both=math:0.5,style:0.5"]}, "vLLM cannot mix adapters"),
    ({"adapter": ["math={math}:0.7"]}, "asks for a weighted mix, which vLLM cannot compute"),
    ({"system_prompt": "be brief"}, "cannot honour --system_prompt"),
    ({"template": "none"}, "cannot honour --template"),
    ({"allowed_hosts": ["example.com"]}, "vLLM does not check the Host header"),
])  # fmt: skip
def test_what_vllm_cannot_do_is_refused_in_one_line(tiny_model, adapters, flags, words):
    flags = {k: [v.format(**adapters) for v in vs] if isinstance(vs, list) else vs for k, vs in flags.items()}
    cfg = ServeConfig(model=tiny_model, backend="vllm", **{"adapter": [f"math={adapters['math']}"], **flags})
    with pytest.raises(ConfigError, match="^--backend vllm") as err:
        vllm_command(cfg, ["vllm"])
    assert words in str(err.value)


def test_no_vllm_installed_is_refused(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="vLLM is not installed here"):
        run_vllm(ServeConfig(model=tiny_model, backend="vllm"), exec_=lambda *a: pytest.fail("exec'd"))


def test_vllm_args_without_the_backend_is_refused():
    with pytest.raises(ConfigError, match="--vllm_args is for --backend vllm"):
        ServeConfig(vllm_args="--max-model-len 512")


def test_serve_replaces_itself_with_vllm(tiny_model, adapters, tmp_path):
    """The real CLI in a subprocess: `vllm` runs in the same process (exec), with our argv, and its exit code."""
    fake_vllm(tmp_path / "bin")
    record = tmp_path / "argv.txt"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record),
           "PYTHONPATH": str(SRC), "LLM_TUNING_API_KEY": "from-env"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "llm_tuning.cli", "serve", "--backend", "vllm", "--model", tiny_model,
                             "--adapter", f"math={adapters['math']}", "--port", "8123"], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = record.read_text().splitlines()
    assert lines[0] == f"pid {proc.pid}"  # the same process: exec'd, not a child
    assert lines[1:4] == ["serve", tiny_model, "--served-model-name"] and "--api-key" in lines
    assert (
        lines[lines.index("--api-key") + 1] == "from-env" and "from-env" not in err
    )  # masked in the log line
    assert "handing over to vLLM" in err
