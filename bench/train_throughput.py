"""LoRA SFT throughput, model-FLOPs utilisation and peak memory: llm-tuning `train` against TRL's SFTTrainer.

    python bench/train_throughput.py                  # embedded SmolLM2-135M, 8 steps of batch 8, ~5 min on 2 cores
    python bench/train_throughput.py --levers         # also each speed lever of llm-tuning on its own (~15 min)
    python bench/train_throughput.py --tiny           # a random tiny model: a self-check in under a minute
    python bench/train_throughput.py --model FOLDER --steps 20 --batch 16 --json results.json

Both trainers get the same model, rows (prompt/target, lengths long-tailed over 32..512 tokens), LoRA
(r 8, alpha 16, dropout 0 or --lora_dropout, every linear projection), batch, learning rate and fp32 precision
(TRL: bf16=False; its other defaults are kept, gradient checkpointing included, unless
--trl_no_checkpointing). TRL reads the rows as conversational prompt-completion pairs, llm-tuning
through its chat template: both mask the prompt. Each run is a subprocess of its own, so its peak RSS
(VmHWM) is its own. Tokens/s counts non-padding input tokens over steps 2..N (step 1's set-up left out).
MFU = tokens/s x model FLOPs per token / the fp32 matmul peak measured in this run (benchlib.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib

from llm_tuning.data.read import write_jsonl

HERE = Path(__file__).resolve().parent

PLAIN = {"packing": False, "lean_logits": False, "fast_dropout": False, "lean_mlp": False}
LEVERS = {  # name -> llm-tuning TrainConfig flags: each lever added to the plain path, or taken from the defaults
    "plain: padded, full logits, nn.Dropout": PLAIN,
    "plain + group_by_length": {**PLAIN, "group_by_length": True},
    "plain + lean logits": {**PLAIN, "lean_logits": True},
    "plain + packing (block mask)": {**PLAIN, "packing": True, "row_attention": False},
    "plain + packing (row attention)": {**PLAIN, "packing": True},
    "plain + fast dropout": {**PLAIN, "fast_dropout": True},
    "defaults, block mask instead of row attention": {"row_attention": False},
    "defaults without the lean MLP": {"lean_mlp": False},
    "defaults + gradient checkpointing": {"gradient_checkpointing": True},
    "defaults + LoRA dropout 0.05 (fast dropout)": {"lora_dropout": 0.05},
    "defaults + mmap threshold 4 MiB": {"mmap_threshold_mb": 4},
    "defaults + LoRA dropout 0.05, nn.Dropout": {"lora_dropout": 0.05, "fast_dropout": False},
}
COMPILE = {"+ torch.compile": {"extra_args": {"torch_compile": True}}}


def run_llm_tuning(spec: dict) -> dict:
    from llm_tuning.train.sft import TrainConfig, load_datasets, run

    clock = benchlib.make_clock()
    cfg = TrainConfig(model=spec["model"], data=spec["data"], output_dir=spec["out"], max_steps=spec["steps"],
                      per_device_train_batch_size=spec["batch"], learning_rate=2e-4, warmup_steps=0, lora_rank=8,
                      lora_alpha=16, logging_steps=spec["steps"], save_steps=10**9, report_to="none",
                      max_seq_length=1024, seed=42, **{"lora_dropout": spec["dropout"], **spec["flags"]})  # fmt: skip
    result = run(cfg, callbacks=[clock])
    lengths = list(load_datasets(cfg)[0]["length"])
    return finish(clock, lengths, result.train_loss)


def run_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from llm_tuning.models.lora import find_lora_targets
    from llm_tuning.models.resolve import resolve_model

    path = resolve_model(spec["model"])
    bf16 = bool(spec["flags"].get("bf16"))  # GPU runs (bench/gpu_check.py); fp32 otherwise
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    if torch.cuda.is_available():
        model.to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "completion": [{"role": "assistant", "content": r["target"]}]} for r in rows])  # fmt: skip
    extra = {"gradient_checkpointing": False} if spec["flags"].get("no_checkpointing") else {}
    args = SFTConfig(output_dir=spec["out"], per_device_train_batch_size=spec["batch"], max_steps=spec["steps"],
                     learning_rate=2e-4, logging_steps=spec["steps"], save_strategy="no", report_to="none",
                     bf16=bf16, fp16=False, seed=42, max_length=1024, include_num_input_tokens_seen="non_padding",
                     dataloader_pin_memory=False, **extra)  # fmt: skip
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=spec["dropout"], target_modules=find_lora_targets(model),
                      task_type="CAUSAL_LM")  # fmt: skip
    clock = benchlib.make_clock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora,
                         callbacks=[clock])  # fmt: skip
    output = trainer.train()
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    return finish(clock, lengths, output.training_loss)


def finish(clock, lengths: list[int], loss: float) -> dict:
    import torch

    tokens_per_s, tokens, seconds = clock.tokens_per_second()
    gpu = {"peak_gpu": torch.cuda.max_memory_allocated()} if torch.cuda.is_available() else {}
    return {**gpu, "tokens_per_s": tokens_per_s, "timed_tokens": tokens, "timed_s": seconds, "loss": loss,
            "flops_per_token": benchlib.training_flops_per_token(clock.model, lengths),
            "mean_row_tokens": sum(lengths) / len(lengths), "peak_rss": benchlib.peak_rss_bytes()}  # fmt: skip


def worker(spec: dict) -> None:
    """Run one training in this process and print its result as the last stdout line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = (run_trl if spec["trainer"] == "trl" else run_llm_tuning)(spec)
    print("RESULT " + json.dumps(result), flush=True)


def launch(name: str, spec: dict, workdir: Path, env: dict) -> dict:
    """Run `spec` in a fresh subprocess; its result with the run's name."""
    spec = {**spec, "out": str(workdir / name.replace(" ", "_").replace("/", "-"))}
    print(f"-- {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, str(HERE / "train_throughput.py"), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = {"name": name, **json.loads(lines[-1][len("RESULT ") :])}
    print(f"   {result['tokens_per_s']:.1f} tokens/s, peak RSS {result['peak_rss'] / 2**30:.2f} GiB",
          file=sys.stderr, flush=True)  # fmt: skip
    return result


def table(results: list[dict], peak: float, baseline: dict) -> str:
    lines = ["| run | tokens/s | x TRL | MFU | peak RSS GiB | x TRL | tokens/row | train loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        mfu = r["tokens_per_s"] * r["flops_per_token"] / peak
        lines.append(f"| {r['name']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / baseline['tokens_per_s']:.2f} "
                     f"| {mfu:.0%} | {r['peak_rss'] / 2**30:.2f} | {r['peak_rss'] / baseline['peak_rss']:.2f} "
                     f"| {r['mean_row_tokens']:.0f} | {r['loss']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def isolated_env(workdir: Path) -> dict:
    """The dataset cache in `workdir`; the converted embedded model shared with the user's home."""
    home = workdir / "home"
    home.mkdir()
    shared = Path(os.environ.get("LLM_TUNING_HOME", Path.home() / ".cache" / "llm-tuning")) / "models"
    shared.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(shared)
    return {
        **os.environ,
        "LLM_TUNING_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # llm-tuning turns on PyTorch's huge-page allocations when it is imported; TRL gets them too
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="folder, hub id or built-in name")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is not timed)")
    p.add_argument("--batch", type=int, default=8, help="rows per step")
    p.add_argument("--max_len", type=int, default=512, help="longest row, in tokens (the shortest is 32)")
    p.add_argument(
        "--lora_dropout", type=float, default=0.0, help="LoRA dropout of both trainers (llm-tuning's default)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="a random tiny Llama instead of --model: quick self-check"
    )
    p.add_argument("--levers", action="store_true", help="also run each llm-tuning speed lever on its own")
    p.add_argument("--lever", action="append", default=[], choices=sorted(LEVERS), help="also run this lever")
    p.add_argument(
        "--compile", action="store_true", help="also the defaults under torch.compile (slow to compile)"
    )
    p.add_argument(
        "--trl_no_checkpointing", action="store_true", help="TRL without its default grad checkpointing"
    )
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        env = isolated_env(workdir)
        model = str(benchlib.make_tiny_model(workdir / "tiny")) if args.tiny else args.model
        rows = benchlib.make_rows(max(args.steps * args.batch, 64), high=args.max_len)
        data = str(write_jsonl(rows, workdir / "rows.jsonl"))
        base = {
            "model": model,
            "data": data,
            "steps": args.steps,
            "batch": args.batch,
            "dropout": args.lora_dropout,
        }
        peak = benchlib.matmul_peak()
        runs = [("TRL SFTTrainer", {**base, "trainer": "trl", "flags": {"no_checkpointing": args.trl_no_checkpointing}}),
                ("llm-tuning train (defaults)", {**base, "trainer": "llm-tuning", "flags": {}})]  # fmt: skip
        chosen = LEVERS if args.levers else {name: LEVERS[name] for name in args.lever}
        levers = {**chosen, **(COMPILE if args.compile else {})}
        runs += [(name, {**base, "trainer": "llm-tuning", "flags": flags}) for name, flags in levers.items()]
        results = [launch(name, spec, workdir, env) for name, spec in runs]
        peak = max(peak, benchlib.matmul_peak())
    report(results, peak, args)


def report(results: list[dict], peak: float, args: argparse.Namespace) -> None:
    trl, ours = results[0], results[1]
    print(f"\nmodel {'tiny random Llama' if args.tiny else args.model}; {args.steps} steps of batch {args.batch}; "
          f"LoRA r 8, dropout {args.lora_dropout}; "
          f"rows 32..{args.max_len} tokens; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"{os.cpu_count()} CPUs\n")  # fmt: skip
    print(table(results, peak, trl))
    speed = ours["tokens_per_s"] / trl["tokens_per_s"]
    memory = ours["peak_rss"] / trl["peak_rss"]
    mfu = ours["tokens_per_s"] * ours["flops_per_token"] / peak
    print(f"\nllm-tuning vs TRL: {speed:.2f}x tokens/s (goal >= 1.5), {memory:.2f}x peak RSS (goal <= 0.6), "
          f"MFU {mfu:.0%} (goal >= 70%)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_flops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
