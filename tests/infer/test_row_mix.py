"""Per-request mixes ("math:0.7+style:0.3") in predict, compare and eval: greedy replies of a mix row equal those
of the same mix built up front with PEFT's `cat`, in batches shared with base and plain-adapter rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models

from llm_tuning.config import ConfigError
from llm_tuning.data.read import DataError
from llm_tuning.eval.evaluate import EvalConfig
from llm_tuning.eval.evaluate import run as evaluate
from llm_tuning.infer.compare import CompareConfig
from llm_tuning.infer.compare import run as compare
from llm_tuning.infer.predict import PredictConfig
from llm_tuning.infer.predict import run as predict

QUESTIONS = ["hi", "What is 12 + 7? " * 3, "What is 9 x 8?", "the quick brown fox " * 3, "x", "hello world"]
MIX = "math:0.7+style:0.3"


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("row-mix")
    # different ranks and targets: `cat` mixes them, `linear` could not
    return {"math": tiny_models.random_adapter(tiny_model, root / "math", 4, ["q_proj", "v_proj"], 1),
            "style": tiny_models.random_adapter(tiny_model, root / "style", 8, ["k_proj", "o_proj", "down_proj"], 2)}  # fmt: skip


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_predict(model: str, data: Path, out: Path, **flags) -> list[dict]:
    predict(PredictConfig(model=model, data_path=str(data), output_file=str(out), max_new_tokens=8, device="cpu",
                          **flags))  # fmt: skip
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_rows_naming_base_adapters_and_mixes_equal_up_front_models(tiny_model, adapters, tmp_path):
    both = [f"math={adapters['math']}", f"style={adapters['style']}"]
    asked = ["base", "math", MIX, "style", f"{MIX}@cat", None, "math:1", "style:0.5+math:-0.5"]
    rows = [{"prompt": q, **({"model": a} if a else {})} for q in QUESTIONS for a in asked]
    got = run_predict(tiny_model, write_rows(tmp_path / "rows.jsonl", rows), tmp_path / "p.jsonl",
                      adapter=both, adapter_key="model", mix=["style:1"])  # fmt: skip
    data = write_rows(tmp_path / "q.jsonl", [{"prompt": q} for q in QUESTIONS])

    def up_front(name: str, *specs: str) -> list[str]:
        out = run_predict(tiny_model, data, tmp_path / f"{name}.jsonl", adapter=list(specs), mix_method="cat")
        return [r["prediction"] for r in out]

    expected = {
        "base": up_front("base"),
        "math": up_front("math", adapters["math"]),
        "style": up_front("style", adapters["style"]),
        MIX: up_front("mix", f"math={adapters['math']}:0.7", f"style={adapters['style']}:0.3"),
        "anti": up_front("anti", f"style={adapters['style']}:0.5", f"math={adapters['math']}:-0.5"),
    }
    names = {"base": "base", "math": "math", MIX: MIX, "style": "style", f"{MIX}@cat": MIX, None: "style",
             "math:1": "math", "style:0.5+math:-0.5": "anti"}  # fmt: skip
    for i, row in enumerate(got):
        question, asked_for = divmod(i, len(asked))
        assert row["prediction"] == expected[names[asked[asked_for]]][question], (row, asked[asked_for])
        assert row["adapter"] == asked[asked_for]
    assert expected[MIX] != expected["math"] and expected[MIX] != expected["style"]  # the test can fail


def test_predict_mix_flag_equals_the_up_front_cat_mix(tiny_model, adapters, tmp_path):
    data = write_rows(tmp_path / "q.jsonl", [{"prompt": q} for q in QUESTIONS])
    per_row = run_predict(tiny_model, data, tmp_path / "a.jsonl", mix=[MIX],
                          adapter=[f"math={adapters['math']}", f"style={adapters['style']}"])  # fmt: skip
    built = run_predict(tiny_model, data, tmp_path / "b.jsonl", mix_method="cat",
                        adapter=[f"math={adapters['math']}:0.7", f"style={adapters['style']}:0.3"])  # fmt: skip
    assert [r["prediction"] for r in per_row] == [r["prediction"] for r in built]


def test_compare_and_eval_mix_columns_equal_the_cat_mix_column(tiny_model, adapters, tmp_path):
    weighted = [f"math={adapters['math']}:0.7", f"style={adapters['style']}:0.3"]
    data = write_rows(tmp_path / "qa.jsonl", [{"prompt": q, "target": "19"} for q in QUESTIONS])
    result = compare(CompareConfig(model=tiny_model, adapter=weighted, mix_method="cat", data_path=str(data),
                                   mix=[MIX, "half=math:0.5+style:0.5"], max_new_tokens=8))  # fmt: skip
    assert result.variants == ["base", "math", "style", "mix", MIX, "half"]
    assert [r[MIX] for r in result.rows] == [r["mix"] for r in result.rows]
    assert [r["half"] for r in result.rows] != [r["mix"] for r in result.rows]
    scored = evaluate(EvalConfig(model=tiny_model, adapter=weighted, mix_method="cat", data_path=str(data),
                                 mix=[f"m={MIX}"], metrics="exact_match,loss", max_new_tokens=8,
                                 output_dir=str(tmp_path / "eval")))  # fmt: skip
    assert scored.variants == ["base", "math", "style", "mix", "m"]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [r["replies"]["m"] for r in report["rows"]] == [r["replies"]["mix"] for r in report["rows"]]
    assert scored.scores["m"]["loss"] == pytest.approx(scored.scores["mix"]["loss"], rel=1e-5)
    assert scored.scores["m"]["loss"] != pytest.approx(scored.scores["math"]["loss"], rel=1e-5)


def test_bad_mixes_name_the_flag_or_the_row(tiny_model, adapters, tmp_path):
    both = [f"math={adapters['math']}", f"style={adapters['style']}"]
    data = write_rows(
        tmp_path / "r.jsonl", [{"prompt": "a", "model": "math"}, {"prompt": "b", "model": "math:x"}]
    )
    with pytest.raises(DataError, match=r"r.jsonl, row 2, field 'model': mix 'math:x': the weight 'x'"):
        run_predict(tiny_model, data, tmp_path / "p.jsonl", adapter=both, adapter_key="model")
    for mix, words in [("math:0.5,style:0.5", "join adapters with '+'"), ("nope:1", "no adapter named 'nope'"),
                       ("math:1@ties", "'ties' cannot be computed per request"), ("math=style:1", "already taken")]:  # fmt: skip
        with pytest.raises(ConfigError, match="^--mix ") as err:
            run_predict(tiny_model, data, tmp_path / "p.jsonl", adapter=both, mix=[mix])
        assert words in str(err.value)
    assert not (tmp_path / "p.jsonl").exists()  # nothing written for a refused run
