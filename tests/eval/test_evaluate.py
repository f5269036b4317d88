"""`llm-tuning eval` on the tiny model: the report files, the numbers in them, and every bad input."""

from __future__ import annotations

import json
import math

import pytest

from llm_tuning.cli import main
from llm_tuning.eval.evaluate import EvalConfig, run
from llm_tuning.eval.likelihood import encode_conversations, target_nll


def evaluate(tiny_model, held_out, tmp_path, **flags):
    cfg = EvalConfig(model=tiny_model, data_path=str(held_out), prompt_key="q", target_key="a", device="cpu",
                     max_new_tokens=8, output_dir=str(tmp_path / "out"), **flags)  # fmt: skip
    result = run(cfg)
    return result, json.loads((tmp_path / "out" / "eval.json").read_text(encoding="utf-8"))


def test_eval_base_adapters_and_mix_side_by_side(tiny_model, held_out, tmp_path, adapters):
    result, report = evaluate(tiny_model, held_out, tmp_path, batch_size=3,
                              adapter=[f"rand={adapters['rand']}:0.5", f"zero={adapters['zero']}"])  # fmt: skip
    assert result.variants == report["variants"] == ["base", "rand", "zero", "mix"]
    scores = report["scores"]
    assert set(scores["base"]) == {"exact_match", "token_f1", "rouge_l", "bleu", "loss", "perplexity"}
    assert scores["zero"] == scores["base"]  # a LoRA with B = 0 is the base model
    assert scores["rand"]["loss"] != scores["base"]["loss"]
    assert math.isclose(scores["base"]["perplexity"], math.exp(scores["base"]["loss"]), rel_tol=1e-9)
    rows = report["rows"]
    assert [r["row"] for r in rows] == [1, 2, 3, 4] and rows[3]["target"] == "你好世界"
    assert rows[0]["replies"]["zero"] == rows[0]["replies"]["base"]
    assert any(r["replies"]["rand"] != r["replies"]["base"] for r in rows)
    for name, change in report["changes"].items():  # gained / lost agree with the per-row scores
        by = report["compare_by"]
        assert change["gained"] == [r["row"] for r in rows if r["scores"][name][by] > r["scores"]["base"][by]]
        assert change["lost"] == [r["row"] for r in rows if r["scores"][name][by] < r["scores"]["base"][by]]
    assert report["changes"]["zero"] == {"gained": [], "lost": []}
    markdown = (tmp_path / "out" / "eval.md").read_text(encoding="utf-8")
    assert "| model | exact_match |" in markdown and "| mix |" in markdown
    assert "rows/s" in result.summary() and "rand vs base" in result.summary()


def test_target_loss_equals_the_models_own_loss(tiny_model, held_out, tmp_path):
    """The eval loss of a row is the mean cross-entropy over its trained tokens, as the model computes it."""
    import torch

    from llm_tuning.models.load import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(tiny_model), load_model(tiny_model, device="cpu")
    conversation = [
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "the quick fox"},
    ]
    ((ids, labels),) = encode_conversations(tokenizer, [conversation])
    longer = (ids + ids[:5], labels + [-100] * 5)  # batched with it, so the row is right-padded
    (nll, n), _ = target_nll(model, [(ids, labels), longer], tokenizer.pad_token_id)
    expected = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
    assert n == sum(label != -100 for label in labels) > 0
    assert nll / n == pytest.approx(expected, rel=1e-5)
    _, report = evaluate(tiny_model, held_out, tmp_path, metrics="loss")
    assert set(report["scores"]["base"]) == {"loss", "perplexity"} and "replies" not in report["rows"][0]


def test_user_metric_gets_predictions_targets_and_columns(tiny_model, held_out, tmp_path):
    metric = tmp_path / "my_metrics.py"
    metric.write_text(
        "def answer_len(predictions, targets, prompts, q, a, **_):\n"
        "    assert targets == a and len(prompts) == len(q)\n"
        "    return [len(t) for t in targets]\n"
    )
    _, report = evaluate(
        tiny_model, held_out, tmp_path, metrics="exact_match", metric=[f"{metric}:answer_len"]
    )
    key = f"{metric}:answer_len"
    assert [r["scores"]["base"][key] for r in report["rows"]] == [11, 2, 19, 4]
    assert report["scores"]["base"][key] == pytest.approx(9.0)


def test_cli_eval_prints_the_table(tiny_model, held_out, tmp_path, capsys):
    code = main(["eval", "--model", tiny_model, "--data", str(held_out), "--prompt_key", "q", "--target_key", "a",
                 "--max_new_tokens", "4", "--metrics", "rouge_l,bleu", "--output_dir", str(tmp_path / "o")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "rouge_l" in out and "base" in out and (tmp_path / "o" / "eval.md").is_file()


@pytest.mark.parametrize(
    ("case", "flags", "expected"),
    [
        ("no targets", ["--target_key", "answer"], r"held_out.jsonl, row 1, field 'answer': is missing.*--metrics"),
        ("unknown metric", ["--metrics", "rouge_l,meteor"], r"--metrics: unknown metric 'meteor'.*rouge_l"),
        ("no metric", ["--metrics", ","], r"--metrics is empty"),
        ("bad segmenter", ["--segmenter", "words"], r"--segmenter 'words' is not valid.*jieba"),
        ("missing metric file", ["--metric", "nope.py:f"], r"--metric nope.py:f: file nope.py does not exist"),
        ("metric not module:function", ["--metric", "f1"], r"--metric 'f1': write it as module:function"),
        ("adapter for another base", ["--adapter", "FOREIGN"],
         r"--adapter .* does not fit --model .*: layer model.layers.0.self_attn.q_proj has 32 inputs and 32 "
         r"outputs here, the adapter's weights are for 64.*pass that --model"),
        ("not an adapter folder", ["--adapter", "HELD_OUT_DIR"], r"no adapter_config.json there"),
        ("missing data", ["--data", "missing.jsonl"], r"missing.jsonl: file does not exist"),
    ],
)  # fmt: skip
def test_eval_bad_input_is_one_clear_error(tiny_model, held_out, foreign_adapter, capsys, monkeypatch, case, flags,
                                           expected):  # fmt: skip
    import re

    monkeypatch.chdir(held_out.parent)
    flags = [
        foreign_adapter if f == "FOREIGN" else str(held_out.parent) if f == "HELD_OUT_DIR" else f
        for f in flags
    ]
    argv = ["eval", "--model", tiny_model, "--data", str(held_out), "--prompt_key", "q", "--target_key", "a",
            "--max_new_tokens", "2", *flags]  # fmt: skip
    assert main(argv) == 2, case
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # above it only transformers' weight-loading progress bar
    assert "Traceback" not in err and last.startswith("llm-tuning eval: error: "), err
    assert re.search(expected, last), err


def test_user_metric_returning_garbage_is_named(tiny_model, held_out, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("def short(predictions, **_):\n    return [1.0]\n")
    argv = ["eval", "--model", tiny_model, "--data", str(held_out), "--prompt_key", "q", "--target_key", "a",
            "--max_new_tokens", "2", "--metric", f"{bad}:short", "--output_dir", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "must return one finite number per row (4)" in capsys.readouterr().err
    assert not (tmp_path / "o" / "eval.json").exists()  # nothing half-written
