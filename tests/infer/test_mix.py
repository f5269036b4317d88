"""`llm-tuning mix`, `merge` and `compare` on the tiny model: files written, plain libraries load them, same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models
import torch

from llm_tuning.cli import main
from llm_tuning.config import ConfigError
from llm_tuning.infer.compare import CompareConfig
from llm_tuning.infer.compare import run as compare
from llm_tuning.infer.mix import MergeConfig, MixConfig, run_merge, run_mix
from llm_tuning.models.adapters import apply_adapters, parse_adapter_spec

INPUT = torch.tensor([[1, 5, 40, 77, 120, 9, 33, 250]])


def random_adapter(base: str, folder: Path, rank: int, targets: list[str], seed: int) -> str:
    return tiny_models.random_adapter(base, folder, rank, targets, seed, alpha=rank)


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mix-adapters")
    return {"math": random_adapter(tiny_model, root / "math", 4, ["q_proj", "v_proj"], 1),
            "style": random_adapter(tiny_model, root / "style", 8, ["k_proj", "o_proj"], 2)}  # fmt: skip


def base(tiny_model: str, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype).eval()


@torch.no_grad()
def logits(model) -> torch.Tensor:
    return model(INPUT).logits.float()


def test_mix_writes_an_adapter_folder_plain_peft_loads(tiny_model, adapters, tmp_path):
    from peft import PeftModel

    flags = [f"math={adapters['math']}:0.7", f"style={adapters['style']}:0.3"]
    result = run_mix(MixConfig(model=tiny_model, adapter=flags, method="cat", output=str(tmp_path / "mixed")))
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "llm_tuning_config.yaml",
    } <= set(result.files)
    assert json.loads((tmp_path / "mixed" / "adapter_config.json").read_text())["r"] == 12  # cat: 4 + 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    expected = logits(apply_adapters(base(tiny_model), [parse_adapter_spec(f) for f in flags], "cat"))
    plain = PeftModel.from_pretrained(base(tiny_model), tmp_path / "mixed").eval()
    torch.testing.assert_close(logits(plain), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, logits(base(tiny_model)), atol=1e-3)


def test_merge_equals_unmerged_and_loads_with_plain_transformers(tiny_model, adapters, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    flags = [f"math={adapters['math']}:0.5", f"style={adapters['style']}:0.5"]
    run_merge(MergeConfig(model=tiny_model, adapter=flags, method="svd", output=str(tmp_path / "merged")))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    unmerged = apply_adapters(base(tiny_model), [parse_adapter_spec(f) for f in flags], "svd")
    torch.testing.assert_close(logits(merged), logits(unmerged), atol=1e-4, rtol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith(
        "<|im_start|>user"
    )


def test_merge_dtype_and_overwrite(tiny_model, adapters, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged16"
    cfg = dict(model=tiny_model, adapter=[adapters["math"]], output=str(out), dtype="bfloat16")
    run_merge(MergeConfig(**cfg))
    merged = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert merged.dtype == torch.bfloat16
    unmerged = logits(apply_adapters(base(tiny_model), [parse_adapter_spec(adapters["math"])]))
    torch.testing.assert_close(logits(merged), unmerged, atol=0.1, rtol=0.05)  # bf16 rounding only
    with pytest.raises(ConfigError, match="--overwrite"):
        MergeConfig(**cfg)
    run_merge(MergeConfig(**{**cfg, "dtype": "float32"}, overwrite=True))
    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.float32


def test_cli_mix_reports_which_methods_mix_different_ranks(tiny_model, adapters, tmp_path, capsys):
    argv = ["mix", "--model", tiny_model, "--adapter", f"{adapters['math']}:0.5", "--adapter", f"{adapters['style']}:0.5",
            "--output", str(tmp_path / "out")]  # fmt: skip
    assert main([*argv, "--method", "linear"]) == 2
    assert "cat, svd" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--mix_method", "cat"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_compare_answers_side_by_side(tiny_model, adapters, qa_file, capsys):
    flags = [f"math={adapters['math']}:0.6", f"style={adapters['style']}:0.4"]
    result = compare(CompareConfig(model=tiny_model, adapter=flags, mix_method="cat", data_path=str(qa_file),
                                   prompt_key="q", target_key="a", max_new_tokens=6))  # fmt: skip
    assert result.variants == ["base", "math", "style", "mix"]
    rows = [json.loads(line) for line in result.output_file.read_text().splitlines()]
    assert len(rows) == 4 and set(rows[0]) == {"prompt", "target", "base", "math", "style", "mix"}
    assert len({rows[0][v] for v in result.variants}) > 1  # the adapters change the answers
    assert set(result.exact) == set(result.variants)
    table = result.markdown_file.read_text()
    assert table.startswith("| prompt | target | base | math | style | mix |") and "exact match" in table
    assert "base" in result.summary() and "What is 1 + 2?" in result.summary()
