"""Does an exported GGUF compute what the merged fine-tune computes? Checked on the embedded SmolLM2-135M.

    .venv/bin/python bench/export_check.py                        # a random LoRA r=8 on every projection
    .venv/bin/python bench/export_check.py --adapter weights/math  # a trained adapter instead

For each --outtypes (default f16 and q8_0): `llm-tuning export --format ollama` writes the GGUF and its
Modelfile; transformers' GGUF reader loads the file back, and its logits on a few chat prompts are compared
with the merged model's (fp32): the largest |difference|, the share of positions whose top-1 token agrees,
and whether greedy decoding of --new_tokens tokens gives the same tokens. Numbers go to stdout and
OUTPUT_DIR/results.json. llama.cpp itself is checked by bench/export_llamacpp.py (needs llama-cpp-python).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from llm_tuning.infer.export import ExportConfig, run
from llm_tuning.models.adapters import apply_adapters, parse_adapter_spec
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.resolve import resolve_model

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 + 7?"]


def random_adapter(model_name: str, folder: Path, rank: int = 8, std: float = 0.01) -> str:
    """A LoRA whose B is small random noise (PEFT starts B at zero): it shifts the logits, keeps the English."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = load_model(model_name, "float32", "cpu")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=std)
    peft.save_pretrained(folder)
    return str(folder)


@torch.no_grad()
def greedy(model, ids: torch.Tensor, new_tokens: int) -> list[int]:
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1] :].tolist()


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two decodings share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def compare(merged, reloaded, prompts: list[torch.Tensor], new_tokens: int) -> dict:
    worst, agree, total, same, prefixes = 0.0, 0, 0, 0, []
    for ids in prompts:
        with torch.no_grad():
            expected, got = merged(ids).logits[0], reloaded(ids).logits[0]
        worst = max(worst, (expected - got).abs().max().item())
        agree += (expected.argmax(-1) == got.argmax(-1)).sum().item()
        total += ids.shape[1]
        want, got_tokens = greedy(merged, ids, new_tokens), greedy(reloaded, ids, new_tokens)
        same += want == got_tokens
        prefixes.append(common_prefix(want, got_tokens))
    scale = max(merged(ids).logits.abs().max().item() for ids in prompts)
    return {"max_abs_logit_diff": round(worst, 4), "max_abs_logit": round(scale, 2),
            "top1_agreement": round(agree / total, 4), "greedy_identical": f"{same}/{len(prompts)}", "greedy_common_prefix": prefixes}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None, help="adapter folder (default: a random LoRA)")
    parser.add_argument("--outtypes", default="f16,q8_0")
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--output_dir", default="bench_out/export_check")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers import AutoModelForCausalLM

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapter = args.adapter or random_adapter(args.model, out / "random_adapter")
    tokenizer = load_tokenizer(args.model)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]
    prompts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt") for m in messages
    ]
    prompts = [p if isinstance(p, torch.Tensor) else p["input_ids"] for p in prompts]
    merged = apply_adapters(load_model(args.model, "float32", "cpu"), [parse_adapter_spec(adapter)])
    merged = merged.merge_and_unload().eval()
    base = load_model(args.model, "float32", "cpu")
    results = {"model": resolve_model(args.model), "adapter": adapter, "adapter_vs_base": compare(merged, base, prompts, args.new_tokens)}  # fmt: skip
    for outtype in args.outtypes.split(","):
        path = out / outtype / f"model-{outtype}.gguf"
        start = time.perf_counter()
        run(ExportConfig(model=args.model, adapter=[adapter], output=str(path), outtype=outtype, format="ollama",
                         overwrite=True, device="cpu"))  # fmt: skip
        exported = time.perf_counter() - start
        start = time.perf_counter()
        reloaded = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        ).eval()
        loaded = time.perf_counter() - start
        row = compare(merged, reloaded, prompts, args.new_tokens)
        row.update(
            size_mb=round(path.stat().st_size / 1e6, 1),
            export_s=round(exported, 1),
            reload_s=round(loaded, 1),
        )
        results[outtype] = row
        print(outtype, json.dumps(row), flush=True)
        del reloaded
    print("adapter vs base (how much the adapter changes):", json.dumps(results["adapter_vs_base"]))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
