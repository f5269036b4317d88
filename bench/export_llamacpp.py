"""Does llama.cpp itself load our GGUF files and decode like the merged model? (needs llama-cpp-python)

    pip install llama-cpp-python        # builds llama.cpp from source: a long C++ compile, so not in CI
    .venv/bin/python bench/export_llamacpp.py                         # embedded model, a random LoRA
    .venv/bin/python bench/export_llamacpp.py --adapter weights/math --new_tokens 32

Exports, with the same functions `llm-tuning export` uses: the merged model as f16 and q8_0 GGUF, and the
adapter alone as a GGUF LoRA next to the base model as a GGUF. Then, for a few chat prompts, it checks in
llama.cpp (through llama_cpp.Llama):
1. tokenization: llama.cpp's ids for the rendered chat prompt equal the Hugging Face tokenizer's;
2. greedy decoding: the first --new_tokens tokens from the same prompt ids equal the merged model's
   (transformers, fp32), reported as the length of the common prefix;
3. the LoRA path: base.gguf + `--lora` adapter GGUF decodes like the merged f16 file.
q8_0 may part ways after a few tokens where two candidates are close; f16 should agree on most prompts.
Numbers go to stdout and OUTPUT_DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from export_check import PROMPTS, common_prefix, random_adapter  # bench/ is on sys.path when run as a script

from llm_tuning.infer.export import ExportConfig, run
from llm_tuning.models.adapters import apply_adapters, parse_adapter_spec
from llm_tuning.models.gguf_export import write_model_gguf
from llm_tuning.models.load import load_model, load_tokenizer


def llama_cpp_greedy(llm, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation in llama.cpp (top_k=1, no repetition penalty), stopping at end of generation."""
    out: list[int] = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if len(out) >= new_tokens or token == llm.token_eos():
            break
        out.append(token)
    return out


def check(
    path: Path, prompts: list[str], hf_ids: list[list[int]], expected: list[list[int]], args, **kw
) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_threads=args.threads, seed=0, verbose=False, **kw)
    same_ids = sum(
        llm.tokenize(p.encode("utf-8"), add_bos=False, special=True) == ids
        for p, ids in zip(prompts, hf_ids, strict=True)
    )
    prefixes = [
        common_prefix(llama_cpp_greedy(llm, ids, args.new_tokens), want)
        for ids, want in zip(hf_ids, expected, strict=True)
    ]
    return {"tokenization_identical": f"{same_ids}/{len(prompts)}", "greedy_common_prefix": prefixes,
            "greedy_identical": f"{sum(p == len(w) for p, w in zip(prefixes, expected, strict=True))}/{len(prompts)}"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None, help="adapter folder (default: a random LoRA)")
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output_dir", default="bench_out/export_llamacpp")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapter = args.adapter or random_adapter(args.model, out / "random_adapter")
    tokenizer = load_tokenizer(args.model)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]  # fmt: skip
    hf_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    merged = apply_adapters(
        load_model(args.model, "float32", "cpu"), [parse_adapter_spec(adapter)]
    ).merge_and_unload()
    with torch.no_grad():
        expected = []
        for ids in hf_ids:
            gen = merged.generate(
                torch.tensor([ids]), max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0
            )
            expected.append([t for t in gen[0, len(ids) :].tolist()])
    expected = [e[: e.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in e else e for e in expected]
    results: dict = {"adapter": adapter, "new_tokens": args.new_tokens}
    for outtype in ("f16", "q8_0"):
        path = out / f"model-{outtype}.gguf"
        run(
            ExportConfig(
                model=args.model, adapter=[adapter], output=str(path), outtype=outtype, overwrite=True
            )
        )
        results[outtype] = check(path, texts, hf_ids, expected, args)
        print(outtype, json.dumps(results[outtype]), flush=True)
    base_path, lora_path = out / "base-f16.gguf", out / "adapter-lora.gguf"
    write_model_gguf(load_model(args.model, "float32", "cpu"), tokenizer, base_path, "f16")
    run(ExportConfig(model=args.model, adapter=[adapter], output=str(lora_path), format="gguf-lora", outtype="f32",
                     overwrite=True))  # fmt: skip
    results["base_f16_plus_lora"] = check(base_path, texts, hf_ids, expected, args, lora_path=str(lora_path))
    print("base f16 + --lora", json.dumps(results["base_f16_plus_lora"]))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
