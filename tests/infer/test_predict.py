"""Batch predictions on the tiny model: the output rows, and left padding that does not change greedy replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.data.read import DataError
from llm_tuning.infer.predict import PredictConfig, run
from llm_tuning.models.generate import GenerationOptions, generate, generate_all

ROWS = [
    {"q": "hi", "a": "hello"},
    {"q": "What is 12 + 7? " * 3, "a": "12 + 7 = 19"},
    {"q": "What is 9 x 8?", "a": "9 x 8 = 72"},
    {"q": "the quick brown fox jumps over the lazy dog " * 2, "a": "dog"},
]


@pytest.fixture()
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def predict(model: str, path: Path, out: Path, **flags):
    cfg = PredictConfig(model=model, data_path=str(path), prompt_key="q", target_key="a", output_file=str(out),
                        max_new_tokens=6, device="cpu", **flags)  # fmt: skip
    result = run(cfg)
    return result, [json.loads(line) for line in out.read_text().splitlines()]


def test_prediction_rows_and_batch_size_invariance(tiny_model, prompts_file, tmp_path):
    one, rows_1 = predict(tiny_model, prompts_file, tmp_path / "b1.jsonl", batch_size=1)
    three, rows_3 = predict(tiny_model, prompts_file, tmp_path / "b3.jsonl", batch_size=3)
    assert one.rows == three.rows == 4
    assert [set(r) for r in rows_1] == [{"prompt", "target", "prediction"}] * 4
    assert [(r["prompt"], r["target"]) for r in rows_1] == [
        (r["q"], r["a"]) for r in ROWS
    ]  # input order kept
    assert [r["prediction"] for r in rows_1] == [r["prediction"] for r in rows_3]
    assert len({r["prediction"] for r in rows_1}) > 1  # the replies depend on the prompt
    assert one.tokens_per_second > 0


def test_default_output_path_limit_and_missing_target(tiny_model, tmp_path):
    path = tmp_path / "only_prompts.jsonl"
    path.write_text('{"q": "hi"}\n{"q": "hello"}\n{"q": "x"}\n')
    result = run(
        PredictConfig(model=tiny_model, data_path=str(path), prompt_key="q", max_new_tokens=2, limit=2)
    )
    assert result.output_file == tmp_path / "only_prompts.predictions.jsonl"
    rows = [json.loads(line) for line in result.output_file.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["target"] is None


def test_generate_matches_manual_greedy_decoding(tiny_model):
    """Left-padded batched generation equals step-by-step argmax on each unpadded prompt."""
    import torch

    from llm_tuning.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    model = load_model(tiny_model, device="cpu")
    prompts = ["hi", "What is 12 + 7? What is 12 + 7?"]
    opts = GenerationOptions(max_new_tokens=4)
    batched = generate(model, tokenizer, prompts, opts)
    assert tokenizer.padding_side == "right"  # restored
    for prompt, result in zip(prompts, batched, strict=True):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        assert result.prompt_tokens == ids.shape[1]
        with torch.no_grad():
            for _ in range(4):
                next_id = model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
                if next_id.item() in (tokenizer.eos_token_id, tokenizer.pad_token_id):
                    break
        new = ids[0, len(tokenizer(prompt, add_special_tokens=False).input_ids) :].tolist()
        assert result.new_tokens == len(new)
        assert result.text == tokenizer.decode(new, skip_special_tokens=True).strip()
    reordered, _ = generate_all(model, tokenizer, prompts[::-1], opts, batch_size=1)
    assert [r.text for r in reordered] == [r.text for r in batched[::-1]]


def test_predict_errors(tiny_model, prompts_file):
    with pytest.raises(ConfigError, match="--data_path"):
        PredictConfig(model=tiny_model)
    with pytest.raises(ConfigError, match="--batch_size"):
        PredictConfig(model=tiny_model, data_path=str(prompts_file), batch_size=0)
    with pytest.raises(DataError, match="row 1, field 'question'"):
        run(PredictConfig(model=tiny_model, data_path=str(prompts_file), prompt_key="question"))


def test_engine_equals_plain_generate_batches(tiny_model):
    """generate_all (the batch engine: rows leave when done, others join) equals model.generate batch by batch."""
    from llm_tuning.models.generate import generate_batches
    from llm_tuning.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    model = load_model(tiny_model, device="cpu")
    prompts = [r["q"] for r in ROWS] + ["x", "What is 9 x 8? " * 5]
    opts = GenerationOptions(max_new_tokens=7)
    engine, _ = generate_all(model, tokenizer, prompts, opts, batch_size=3)
    plain, _ = generate_batches(model, tokenizer, prompts, opts, batch_size=3)
    assert engine == plain
