"""`llm-tuning rm` and `rm score` on the tiny model; the reward model on a shared base equals the standalone one."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from llm_tuning.cli import main
from llm_tuning.config import LoraOptions
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.lora import attach_lora, lora_config
from llm_tuning.rlhf.reward_model import RewardAdapter, ScoreConfig, load_reward_model, score_sequences


def test_rm_command_writes_adapter_head_and_report(tiny_model, pairs_file, tmp_path):
    out = tmp_path / "rm"
    code = main(["rm", "--model", tiny_model, "--data", str(pairs_file), "--output_dir", str(out), "--max_steps", "3",
                 "--lora_rank", "4", "--learning_rate", "1e-2", "--eval_split", "0.25", "--logging_steps", "1",
                 "--save_steps", "2"])  # fmt: skip
    assert code == 0
    for name in ("adapter_config.json", "adapter_model.safetensors", "llm_tuning_config.yaml", "training_log.json",
                 "training_curves.png", "tokenizer.json", "checkpoint-2"):  # fmt: skip
        assert (out / name).exists(), name
    assert list((out / "runs").iterdir())
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert all(".lora_" in k or k.endswith("score.weight") for k in weights)  # the base is not saved
    assert any(k.endswith("score.weight") for k in weights)
    assert any(
        ".lora_B" in k and v.abs().sum() > 0 for k, v in weights.items()
    )  # B starts at 0: training moved it
    summary = json.loads((out / "training_log.json").read_text())["summary"]
    assert summary["eval_pairs"] == 3 and 0.0 <= summary["eval_accuracy"] <= 1.0
    assert any("loss" in r for r in json.loads((out / "training_log.json").read_text())["log"])


def test_rm_score_writes_scores_and_accuracy(tiny_model, reward_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert main(["rm", "score", "--model", tiny_model, "--adapter", reward_model_dir, "--data", str(pairs_file),
                 "--output_file", str(out)]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(r["correct"] == (r["chosen_score"] > r["rejected_score"]) for r in rows)
    assert "pairwise accuracy" in capsys.readouterr().out
    replies = tmp_path / "replies.csv"
    replies.write_text(
        "prompt,response\nWhat is 1 + 2?,1 + 2 = 3\nWhat is 1 + 2?,1 + 2 = 4\n", encoding="utf-8"
    )
    assert (
        main(["rm", "score", "--model", tiny_model, "--adapter", reward_model_dir, "--data", str(replies)])
        == 0
    )
    scored = [json.loads(line) for line in (tmp_path / "replies_scores.jsonl").read_text().splitlines()]
    assert [r["row"] for r in scored] == [1, 2] and scored[0]["score"] != scored[1]["score"]


def test_reward_adapter_on_a_causal_lm_scores_like_the_sequence_classifier(tiny_model, reward_model_dir):
    tokenizer = load_tokenizer(tiny_model)
    pad = tokenizer.pad_token_id
    seqs = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for t in ("What is 2 + 3? 2 + 3 = 5", "hello", "the quick brown fox jumps over")]  # fmt: skip
    standalone = score_sequences(
        load_reward_model(ScoreConfig(model=tiny_model, adapter=reward_model_dir, data="x"), pad), seqs, pad
    )
    base = load_model(tiny_model)
    policy = attach_lora(base, lora_config(base, LoraOptions(lora_rank=4)))
    shared = RewardAdapter(policy, reward_model_dir, pad)
    width = max(map(len, seqs))  # left padding, as in a PPO rollout
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    assert torch.allclose(shared.score(ids, mask), standalone, atol=1e-5)
    assert policy.active_adapter == "default"
    assert not any(p.requires_grad for n, p in policy.named_parameters() if ".reward." in n)
    assert all(p.requires_grad for n, p in policy.named_parameters() if ".default." in n)


def test_bad_pairs_stop_rm_with_file_and_row(tiny_model, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "q", "chosen": "same", "rejected": "same"}) + "\n")  # fmt: skip
    assert main(["rm", "--model", tiny_model, "--data", str(data), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{data}, row 2, field 'rejected'" in err and "same text as chosen" in err


def test_rm_starts_from_an_sft_adapter(tiny_model, pairs_file, tmp_path):
    base = load_model(tiny_model)
    sft = attach_lora(base, lora_config(base, LoraOptions(lora_rank=2, target_modules="q_proj,v_proj")))
    for name, p in sft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    sft.save_pretrained(tmp_path / "sft")
    out = tmp_path / "rm"
    args = ["rm", "--model", tiny_model, "--data", str(pairs_file), "--output_dir", str(out), "--max_steps", "1",
            "--sft_adapter", str(tmp_path / "sft"), "--learning_rate", "1e-9", "--report_to", "none"]  # fmt: skip
    assert main(args) == 0
    start = load_file(str(tmp_path / "sft" / "adapter_model.safetensors"))
    rm = load_file(str(out / "adapter_model.safetensors"))
    assert {k for k in rm if ".lora_" in k} == set(start)  # rank 2 on q_proj, v_proj: the SFT adapter's shape
    assert all(torch.allclose(rm[k], start[k], atol=1e-6) for k in start)  # a 1e-9 step barely moves them
