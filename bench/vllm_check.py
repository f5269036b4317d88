"""The `serve --backend vllm` step of bench/gpu_check.sh: start it, ask the base model and each adapter, check.

    python bench/vllm_check.py --out /tmp/out          # on a GPU machine with vllm installed; else it says so

Makes two random LoRA adapters (ranks 4 and 12: vLLM's --max-lora-rank must round 12 up to 16) on the
embedded model, runs `llm-tuning serve --backend vllm --dtype float32 --api_key KEY` (this process's child;
vLLM replaces the llm-tuning process), then checks: /v1/models lists the base and both adapters; a request
without the key gets 401; a greedy chat request per model (base, a, b) answers 200 with text; and how many
of its first tokens agree with llm-tuning's own engine (float32, greedy) on the same model and adapter. Writes
vllm_check.json. Unchecked so far: no GPU machine with vLLM was available where it was written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "What is the capital of France? Answer in one sentence."
KEY = "vllm-check-key"


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 600) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve --backend vllm exited with {proc.returncode} before it answered")
        try:
            if (
                httpx.get(
                    url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
                ).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise SystemExit(f"vLLM did not answer within {seconds:.0f} s")


def ours(model: str, adapters: dict[str, str], max_tokens: int) -> dict[str, str]:
    """llm-tuning's greedy replies (float32) for the base model and each adapter: the reference."""
    from llm_tuning.data.template import prompt_text
    from llm_tuning.models.adapters import AdapterSpec, load_adapters
    from llm_tuning.models.generate import GenerationOptions, generate_all
    from llm_tuning.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(model)
    peft = load_adapters(load_model(model, "float32"), [AdapterSpec(n, p) for n, p in adapters.items()])
    prompt = prompt_text(tokenizer, [{"role": "user", "content": QUESTION}], "chat", None)
    names = ["base", *adapters]
    results, _ = generate_all(peft, tokenizer, [prompt] * len(names), GenerationOptions(max_new_tokens=max_tokens),
                              len(names), names)  # fmt: skip
    return {n: r.text for n, r in zip(names, results, strict=True)}


def check(out: Path, max_tokens: int) -> dict:
    import httpx
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    if not shutil.which("vllm") and importlib.util.find_spec("vllm") is None:
        return {"skipped": "vLLM is not installed"}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import random_adapter

    from llm_tuning.models.resolve import resolve_model

    model = resolve_model("smollm2-135m-instruct")
    report: dict = {"model": model, "checks": {}}
    with tempfile.TemporaryDirectory(prefix="vllm-check-") as tmp:
        adapters = {"a": random_adapter(model, Path(tmp) / "a", 4, ("q_proj", "v_proj"), 1),
                    "b": random_adapter(model, Path(tmp) / "b", 12, ("q_proj", "v_proj"), 2)}  # fmt: skip
        port = 8471
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "llm_tuning.cli", "serve", "--backend", "vllm", "--model", "smollm2-135m-instruct",
               "--served_name", "base", "--dtype", "float32", "--port", str(port), "--api_key", KEY,
               "--vllm_args", "--gpu-memory-utilization 0.3 --max-model-len 2048",
               *(a for n, p in adapters.items() for a in ("--adapter", f"{n}={p}"))]  # fmt: skip
        log = (out / "vllm_serve.log").open("w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, proc)
            auth = {"Authorization": f"Bearer {KEY}"}
            listed = {m["id"] for m in httpx.get(url + "/v1/models", headers=auth).json()["data"]}
            report["checks"]["models listed"] = listed >= {"base", "a", "b"}
            body = {"model": "a", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens,
                    "temperature": 0}  # fmt: skip
            report["checks"]["no key -> 401"] = (
                httpx.post(url + "/v1/chat/completions", json=body).status_code == 401
            )
            expected = ours(model, adapters, max_tokens)
            report["replies"] = {}
            for name in ("base", "a", "b"):
                reply = httpx.post(
                    url + "/v1/chat/completions", json={**body, "model": name}, headers=auth, timeout=120
                )
                text = reply.json()["choices"][0]["message"]["content"] if reply.status_code == 200 else ""
                words, ref = text.split(), expected[name].split()
                agree = next(
                    (i for i, (x, y) in enumerate(zip(words, ref, strict=False)) if x != y),
                    min(len(words), len(ref)),
                )
                report["replies"][name] = {"status": reply.status_code, "vllm": text, "llm_tuning": expected[name],
                                           "first_words_equal": agree}  # fmt: skip
                report["checks"][f"{name} answers"] = reply.status_code == 200 and bool(text.strip())
            report["checks"]["adapters change the answer"] = (
                len({r["vllm"] for r in report["replies"].values()}) == 3
            )
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()
    report["ok"] = all(report["checks"].values())
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    p.add_argument("--max_tokens", type=int, default=24)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = check(out, args.max_tokens)
    except (SystemExit, Exception) as err:  # noqa: BLE001 - the JSON says what went wrong
        report = {"error": f"{type(err).__name__}: {err}"}
    (out / "vllm_check.json").write_text(json.dumps(report, indent=2))
    print("serve --backend vllm:", report.get("skipped") or report.get("error") or report["checks"])


if __name__ == "__main__":
    main()
