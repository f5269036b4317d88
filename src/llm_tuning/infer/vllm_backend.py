"""`llm-tuning serve --backend vllm`: the same base model and adapters, served by vLLM's OpenAI server instead.

    llm-tuning serve --backend vllm --adapter math=weights/math --adapter style=weights/style --api_key SECRET
    # becomes (this process is replaced by):
    vllm serve /path/to/base --served-model-name base --enable-lora --lora-modules math=/abs/weights/math \
        style=/abs/weights/style --max-lora-rank 8 --max-loras 2 --host 127.0.0.1 --port 8000 \
        --allowed-origins '[]' --api-key SECRET

vLLM is an existing engine, not ours: for a GPU machine where it is installed (off by default). The base
model is passed as the folder llm-tuning resolves (the embedded model's converted folder, or yours), each
unweighted `--adapter` as a LoRA module under its name, with --host, --port, --api_key and --cors_origins
carried over (vLLM's own default would allow every web origin). Refused with one line: vLLM not installed;
weighted adapters or --mix (vLLM serves each LoRA alone and cannot mix them; write the mix as one adapter
with `llm-tuning mix --method cat` and serve that); flags vLLM cannot honour (--system_prompt,
--template none, --allowed_hosts: vLLM does not check the Host header). vLLM schedules its own batch, so
--engine, --max_batch, --max_queue and the max_tokens limits do not apply (a warning names those given).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.models.adapters import parse_adapter_spec
from llm_tuning.models.resolve import resolve_model

logger = logging.getLogger(__name__)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
IGNORED = {"engine": "batch", "max_batch": 16, "max_queue": 64, "default_max_tokens": 256, "max_tokens_limit": 2048,
           "max_request_bytes": 1_000_000}  # fmt: skip


def vllm_executable() -> list[str]:
    """The command that starts vLLM's CLI: `vllm` on PATH, else this Python's vllm module; ConfigError if neither."""
    found = shutil.which("vllm")
    if found:
        return [found]
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    raise ConfigError("--backend vllm: vLLM is not installed here (no `vllm` command on PATH, no `vllm` module); "
                      "install it on a machine with a CUDA GPU (pip install vllm), or drop --backend vllm to serve "
                      "with llm-tuning's own engine")  # fmt: skip


def _adapter_rank(folder: str) -> int:
    config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(config.get("r") or 8), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    if config.get("use_dora"):
        raise ConfigError(f"--backend vllm: adapter {folder} uses DoRA, which vLLM does not serve; use llm-tuning's "
                          "engine (drop --backend vllm) or merge it (`llm-tuning merge`) and serve the merged model")  # fmt: skip
    return max(ranks)


def _refuse_unsupported(cfg: Any) -> None:
    if cfg.mix:
        raise ConfigError(f"--backend vllm: --mix {cfg.mix[0]}: vLLM cannot mix adapters (it serves each LoRA alone); "
                          "write the mix as one adapter with `llm-tuning mix --method cat` and serve that folder")  # fmt: skip
    for flag, value, why in (("system_prompt", cfg.system_prompt, "vLLM uses the chat template's own system turn"),
                             ("template", cfg.template if cfg.template != "chat" else None, "vLLM always applies the chat template"),
                             ("allowed_hosts", cfg.allowed_hosts or None, "vLLM does not check the Host header")):  # fmt: skip
        if value:
            raise ConfigError(
                f"--backend vllm cannot honour --{flag} ({why}); drop it, or drop --backend vllm"
            )


def vllm_command(cfg: Any, executable: list[str] | None = None) -> list[str]:
    """The full `vllm serve ...` argv for a ServeConfig (its adapters checked, the base model resolved); the
    executable is found (vllm_executable) after every other check, so a refusal does not depend on the machine."""
    _refuse_unsupported(cfg)
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    weighted = [s for s in specs if s.weight != 1.0]
    if weighted:
        raise ConfigError(f"--backend vllm: --adapter {weighted[0].name}:{weighted[0].weight:g} asks for a weighted mix, "
                          "which vLLM cannot compute (it serves each LoRA alone at weight 1); write the mix as one "
                          "adapter with `llm-tuning mix --method cat` and serve that folder")  # fmt: skip
    base = resolve_model(cfg.model)
    argv = [
        *(executable or vllm_executable()),
        "serve",
        base,
        "--served-model-name",
        cfg.served_name or Path(cfg.model).name,
    ]
    if specs:
        rank = max(_adapter_rank(s.path) for s in specs)
        if rank > VLLM_LORA_RANKS[-1]:
            raise ConfigError(f"--backend vllm: adapter rank {rank} is above vLLM's largest --max-lora-rank "
                              f"({VLLM_LORA_RANKS[-1]})")  # fmt: skip
        argv += ["--enable-lora", "--lora-modules", *(f"{s.name}={Path(s.path).resolve()}" for s in specs),
                 "--max-lora-rank", str(min(r for r in VLLM_LORA_RANKS if r >= rank)), "--max-loras", str(len(specs))]  # fmt: skip
    if cfg.dtype != "auto":
        argv += ["--dtype", cfg.dtype]
    if cfg.trust_remote_code:
        argv.append("--trust-remote-code")
    # vLLM allows every web origin unless told; ours allows none but the server's own page unless --cors_origins
    argv += ["--host", cfg.host, "--port", str(cfg.port), "--allowed-origins", json.dumps(cfg.cors_origins)]
    argv += shlex.split(cfg.vllm_args)
    if cfg.api_key:
        argv += ["--api-key", cfg.api_key]
    return argv


def run_vllm(cfg: Any, exec_: Callable[[str, list[str]], Any] = os.execv) -> None:
    """Replace this process with vLLM's server (exec: same PID, signals and exit code go to vLLM)."""
    argv = vllm_command(cfg)
    ignored = [f"--{k}" for k, default in IGNORED.items() if getattr(cfg, k) != default]
    if ignored:
        logger.warning("--backend vllm: vLLM schedules its own batch; %s do not apply", ", ".join(ignored))
    shown = [("***" if i and argv[i - 1] == "--api-key" else a) for i, a in enumerate(argv)]
    logger.info("handing over to vLLM: %s", shlex.join(shown))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        exec_(argv[0], argv)
    except OSError as err:  # not executable, a broken interpreter line: say so instead of a traceback
        raise ConfigError(f"--backend vllm: could not start {argv[0]}: {err}") from None
