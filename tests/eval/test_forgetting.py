"""`llm-tuning forgetting` on the tiny model: KL and changed answers, score deltas, the report files."""

from __future__ import annotations

import json

import pytest
from tiny_models import random_adapter

from llm_tuning.cli import main
from llm_tuning.eval.forgetting import ForgettingConfig, run
from llm_tuning.eval.general_set import GENERAL_QA
from llm_tuning.eval.likelihood import encode_conversations, next_token_kl


def test_kl_is_zero_for_the_base_and_grows_with_the_adapters_scale(tiny_model, tmp_path):
    from llm_tuning.infer.compare import variant_model
    from llm_tuning.models.adapters import parse_adapter_spec
    from llm_tuning.models.load import load_model, load_tokenizer

    specs = [parse_adapter_spec(f"{n}={random_adapter(tiny_model, tmp_path / n, alpha=a)}")
             for n, a in (("small", 4), ("large", 64))]  # fmt: skip
    tokenizer = load_tokenizer(tiny_model)
    model, _ = variant_model(load_model(tiny_model, device="cpu"), specs, "linear", None)
    rows = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in GENERAL_QA[:5]]
    encoded = encode_conversations(tokenizer, rows)
    assert next_token_kl(model, "base", "base", encoded, tokenizer.pad_token_id) == [0.0] * 5
    small = next_token_kl(model, "base", "small", encoded, tokenizer.pad_token_id, batch_size=2)
    large = next_token_kl(model, "base", "large", encoded, tokenizer.pad_token_id)
    assert all(0 < s < big for s, big in zip(small, large, strict=True))


def test_forgetting_report_on_the_built_in_set_with_a_domain(tiny_model, held_out, adapters, tmp_path):
    cfg = ForgettingConfig(model=tiny_model, adapter=[f"rand={adapters['rand']}", f"zero={adapters['zero']}"],
                           domain=str(held_out), prompt_key="q", target_key="a", limit=6, max_new_tokens=6,
                           output_dir=str(tmp_path / "f"), device="cpu")  # fmt: skip
    result = run(cfg)
    base, rand, zero = result.reports
    assert (zero.kl, zero.changed, zero.general, zero.domain) == (0.0, 0.0, base.general, base.domain)
    assert rand.kl > 0 and rand.changed > 0
    report = json.loads((tmp_path / "f" / "forgetting.json").read_text(encoding="utf-8"))
    assert report["general_set"].endswith("forgetting_general_set.jsonl") and len(report["general_rows"]) == 6
    for row in report["general_rows"]:  # the regressed rows are those whose score dropped
        lost = row["scores"]["rand"] < row["scores"]["base"]
        assert (row["row"] in rand.regressed) == lost
    assert {p.name for p in (tmp_path / "f").iterdir()} == {"forgetting_general_set.jsonl", "forgetting.json", "forgetting.md",
                                                          "forgetting.png"}  # fmt: skip
    assert (tmp_path / "f" / "forgetting.png").read_bytes()[:4] == b"\x89PNG"
    assert "| rand |" in (tmp_path / "f" / "forgetting.md").read_text(encoding="utf-8")
    assert "KL to base" in result.summary()


def test_prompt_only_general_rows_give_kl_without_scores(tiny_model, adapters, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello world"}\n{"prompt": "What is 9 x 8?"}\n')
    result = run(ForgettingConfig(model=tiny_model, adapter=[adapters["rand"]], general=str(prompts), device="cpu",
                                  max_new_tokens=4, output_dir=str(tmp_path / "f")))  # fmt: skip
    assert result.reports[1].general is None and result.reports[1].kl > 0
    assert (tmp_path / "f" / "forgetting.png").is_file()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], "give at least one --adapter"),
        (["--adapter", "ADAPTER", "--score", "meteor"], "--score 'meteor' is not a generation metric"),
        (
            ["--adapter", "ADAPTER", "--domain", "PROMPTS"],
            r"prompts.jsonl, row 1, field 'target': is missing. --domain",
        ),
        (["--adapter", "ADAPTER", "--general", "nope.jsonl"], "nope.jsonl: file does not exist"),
    ],
)
def test_forgetting_bad_input(tiny_model, adapters, tmp_path, capsys, flags, expected):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello world"}\n')
    flags = [adapters["rand"] if f == "ADAPTER" else str(prompts) if f == "PROMPTS" else f for f in flags]
    assert main(["forgetting", "--model", tiny_model, "--output_dir", str(tmp_path / "f"), *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err.splitlines()[-1], err
