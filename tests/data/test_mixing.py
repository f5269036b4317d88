"""Mixing training files in stated proportions (`train --data a --data b:0.2`) and replay."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.data.mixing import DataSource, mix_counts, mix_datasets, parse_data_source, sample_indices


def test_parse_data_source(tmp_path):
    assert parse_data_source("general.jsonl:0.2") == DataSource("general.jsonl", 0.2)
    assert parse_data_source("domain.jsonl") == DataSource("domain.jsonl", None)
    odd = tmp_path / "run:1"  # a file whose name ends in :number is a file
    odd.write_text("{}\n")
    assert parse_data_source(str(odd)) == DataSource(str(odd))
    with pytest.raises(ConfigError, match="--data g.jsonl:1.5: the ratio 1.5 must be between 0 and 1"):
        parse_data_source("g.jsonl:1.5")


def test_mix_counts_give_the_stated_shares():
    # 80 domain rows whole; general 20% of the mix: T = 80 / 0.8 = 100 -> 20 general rows
    assert mix_counts([DataSource("d"), DataSource("g", 0.2)], [80, 1000]) == [80, 20]
    # a small source is repeated: 30% of T = 100 / 0.5 = 200 -> 60 rows from a file of 10
    assert mix_counts([DataSource("d"), DataSource("a", 0.3), DataSource("b", 0.2)], [100, 10, 500]) == [
        100,
        60,
        40,
    ]
    with pytest.raises(ConfigError, match="at least one --data without a ratio"):
        mix_counts([DataSource("a", 0.5), DataSource("b", 0.5)], [1, 1])
    with pytest.raises(ConfigError, match="the ratios add up to 1.1"):
        mix_counts([DataSource("d"), DataSource("a", 0.6), DataSource("b", 0.5)], [1, 1, 1])


def test_sample_indices_repeat_whole_passes_then_sample_without_repetition():
    rng = random.Random(0)
    picked = sample_indices(10, 25, rng)
    counts = Counter(picked)
    assert len(picked) == 25 and set(counts.values()) <= {2, 3} and sum(v == 3 for v in counts.values()) == 5
    assert len(set(sample_indices(10, 7, rng))) == 7


def test_mixed_dataset_counts_within_tolerance():
    from datasets import Dataset

    domain = Dataset.from_dict({"source": ["d"] * 97})
    general = Dataset.from_dict({"source": [f"g{i}" for i in range(500)]})
    mixed, summary = mix_datasets(
        [domain, general], [DataSource("d.jsonl"), DataSource("g.jsonl", 0.25)], seed=1
    )
    share = sum(s != "d" for s in mixed["source"]) / len(mixed)
    assert abs(share - 0.25) <= 1 / len(mixed)  # within one row of the stated share
    assert Counter(s == "d" for s in mixed["source"])[True] == 97  # the whole source is kept whole
    assert len(set(s for s in mixed["source"] if s != "d")) == summary[1]["rows_used"] == 32  # no repeats
    assert mixed["source"][:97] != domain["source"]  # shuffled


def test_train_mixes_files_and_replays_base_answers(tiny_model, tmp_path, caplog):
    from llm_tuning.train.sft import TrainConfig, run

    domain, general = tmp_path / "domain.jsonl", tmp_path / "general.jsonl"
    domain.write_text("".join(json.dumps({"q": f"say {i}", "a": f"phrase {i}"}) + "\n" for i in range(12)))
    general.write_text("".join(json.dumps({"q": f"what is {i}?", "a": f"{i}"}) + "\n" for i in range(40)))
    cfg = TrainConfig(model=tiny_model, data=[str(domain), f"{general}:0.2"], replay=3, prompt_key="q",
                      target_key="a", output_dir=str(tmp_path / "out"), max_steps=1, report_to="none",
                      device="cpu")  # fmt: skip
    with caplog.at_level("INFO"):
        run(cfg)
    replay = [json.loads(line) for line in (tmp_path / "out" / "replay.jsonl").read_text().splitlines()]
    assert 0 < len(replay) <= 3 and all(r["messages"][-1]["role"] == "assistant" for r in replay)
    # 12 domain + the replay rows whole = 80% of the mix; general gives 20%
    used = {r.args[0]: r.args[1] for r in caplog.records if r.msg.startswith("mixed training set")}
    assert used[str(general)] == round(0.2 * (12 + len(replay)) / 0.8)
    assert used[str(domain)] == 12


def test_train_mixing_flags_parse_and_a_single_file_stays_plain():
    from llm_tuning.config import parse_config
    from llm_tuning.train.sft import TrainConfig

    cfg = parse_config(TrainConfig, ["--data", "a.jsonl", "--data", "b.jsonl:0.2"])
    assert cfg.data == ["a.jsonl", "b.jsonl:0.2"]
    assert parse_config(TrainConfig, ["--data", "a.jsonl"]).data == "a.jsonl"
    with pytest.raises(ConfigError, match="--replay"):
        TrainConfig(tokenized_dataset="x", replay=5)
