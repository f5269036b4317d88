"""Load on `llm-tuning serve`: 1, 8 and 32 concurrent clients, half asking adapter A and half adapter B.

    .venv/bin/python bench/serve_load.py                        # embedded SmolLM2-135M, two random LoRA adapters
    .venv/bin/python bench/serve_load.py --tiny                 # a random Llama, hidden 256 x 4 layers

For each engine (`--engine batch`, the continuously batched decode loop, and `--engine serial`, the previous
one-request-at-a-time path) a real server is started as a subprocess on 127.0.0.1; every client thread sends
one streamed chat request (fixed prompts, temperature 0, `--max_tokens` new tokens) at the same moment.
Reported per engine and client count: aggregate generated tokens/s (usage counts over the wall time of the
wave), p50 / p99 latency and time to first token, errors. One table, both engines side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
import httpx
from tiny_models import random_adapter

from llm_tuning.models.resolve import resolve_model

PROMPTS = [
    "Tell me about the sea.",
    "What is 12 + 7?",
    "Write a short poem about rain.",
    "Name three fruits.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: str, adapters: list[str], engine: str, max_batch: int
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llm_tuning.cli", "serve", "--model", model, "--port", str(port),
           "--engine", engine, "--max_batch", str(max_batch), "--max_queue", "256", "--served_name", "base"]  # fmt: skip
    for spec in adapters:
        cmd += ["--adapter", spec]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the {engine} server did not start")


def one_request(url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, float, int] | None:
    """(latency s, time to first token s, completion tokens), or None on any error."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    start, first, tokens = time.perf_counter(), None, 0
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
            if response.status_code != 200:
                return None
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return None
                if first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
    except httpx.HTTPError:
        return None
    return time.perf_counter() - start, first if first is not None else float("nan"), tokens


def wave(url: str, clients: int, max_tokens: int) -> dict[str, float]:
    jobs = [("A" if i % 2 == 0 else "B", PROMPTS[i % len(PROMPTS)]) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda job: one_request(url, job[0], job[1], max_tokens), jobs))
    wall = time.perf_counter() - start
    ok = [r for r in results if r is not None]
    lat, ttft = sorted(r[0] for r in ok), sorted(r[1] for r in ok)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")

    return {"tok/s": sum(r[2] for r in ok) / wall, "p50": statistics.median(lat) if lat else float("nan"),
            "p99": pct(lat, 0.99), "ttft50": statistics.median(ttft) if ttft else float("nan"),
            "ttft99": pct(ttft, 0.99), "errors": len(results) - len(ok)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--tiny", action="store_true", help="a random Llama (--hidden, --layers) instead of --model"
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--max_batch", type=int, default=32)
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = (
            str(benchlib.make_tiny_model(root / "tiny", hidden=args.hidden, layers=args.layers))
            if args.tiny
            else resolve_model(args.model)
        )
        adapters = [f"A={random_adapter(model, root / 'A', 8, ('q_proj', 'v_proj'), seed=1)}",
                    f"B={random_adapter(model, root / 'B', 8, ('q_proj', 'v_proj'), seed=2)}"]  # fmt: skip
        table = {}
        for engine in ("batch", "serial"):
            proc, url = start_server(model, adapters, engine, args.max_batch)
            try:
                one_request(url, "A", PROMPTS[0], 2)  # warm-up
                for clients in counts:
                    table[engine, clients] = wave(url, clients, args.max_tokens)
            finally:
                proc.terminate()
                proc.wait(30)
    name = f"random llama hidden {args.hidden} x {args.layers} layers" if args.tiny else args.model
    print(f"model {name}, {args.max_tokens} new tokens, half A half B")
    print(
        f"{'clients':>7} {'engine':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'ttft50':>7} {'ttft99':>7} {'errors':>6}"
    )
    for clients in counts:
        for engine in ("batch", "serial"):
            r = table[engine, clients]
            print(f"{clients:>7} {engine:>7} {r['tok/s']:8.1f} {r['p50']:7.2f} {r['p99']:7.2f} {r['ttft50']:7.2f} "
                  f"{r['ttft99']:7.2f} {r['errors']:>6}")  # fmt: skip
        b, s = table["batch", clients], table["serial", clients]
        print(
            f"{clients:>7}   ratio batch/serial tok/s {b['tok/s'] / s['tok/s']:.2f}x, p99 {b['p99'] / s['p99']:.2f}x"
        )


if __name__ == "__main__":
    main()
