"""Bad input, as a hostile user gives it: every case exits 2 with one clear line and no traceback.

    pytest tests/test_bad_input.py -q        # the corpus is tests/bad_input_cases.py

Cases run `llm_tuning.cli.main(argv)` in-process with LLM_TUNING_DEBUG=1, so an unexpected exception
fails the test instead of being turned into cli.py's last-resort "internal error" line; a few run the real
entry point (`python -m llm_tuning.cli`) in a subprocess. The folder's adapters are made once: a good one
trained by `llm-tuning train`, damaged copies of it, one of another size and one trained on another base
with the same layer shapes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_cases import all_cases
from tiny_models import build_model, build_tokenizer, random_adapter

from llm_tuning.cli import main

CASES = all_cases()


def _train(model: str, data: Path, out: Path) -> str:
    code = main(["train", "--model", model, "--data", str(data), "--prompt_key", "q", "--target_key", "a",
                 "--lora_rank", "4", "--target_modules", "q_proj,v_proj", "--max_steps", "1",
                 "--output_dir", str(out), "--report_to", "none"])  # fmt: skip
    assert code == 0
    return str(out)


def _foreign(model: str, out: Path) -> str:
    """An adapter saved with its base's record, as `llm-tuning train` writes it, for another base model."""
    from transformers import AutoModelForCausalLM

    from llm_tuning.models.adapter_check import record_base_model

    random_adapter(model, out)
    record_base_model(out, model, AutoModelForCausalLM.from_pretrained(model))
    return str(out)


def _reward_model(model: str, out: Path) -> str:
    """A reward-model folder as `llm-tuning rm` writes it (untrained: only its shapes and base matter here)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from llm_tuning.models.adapter_check import record_base_model

    base = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    config = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS", modules_to_save=["score"]
    )
    get_peft_model(base, config).save_pretrained(out)
    record_base_model(out, model, base)
    return str(out)


def _damaged(good: Path, root: Path) -> dict[str, str]:
    """Copies of a good adapter folder, each broken in one way."""
    out = {}
    weights = (good / "adapter_model.safetensors").read_bytes()

    def copy(name: str) -> Path:
        folder = root / name
        shutil.copytree(good, folder)
        out[name] = str(folder)
        return folder

    (copy("trunc_adapter") / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    (copy("empty_weights_adapter") / "adapter_model.safetensors").write_bytes(b"")
    (copy("garbage_adapter") / "adapter_model.safetensors").write_bytes(os.urandom(2000))
    (copy("config_not_json_adapter") / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ')
    (copy("config_list_adapter") / "adapter_config.json").write_text("[4, 8]")
    (copy("no_weights_adapter") / "adapter_model.safetensors").unlink()
    (copy("no_config_adapter") / "adapter_config.json").unlink()
    folder = copy("rank_mismatch_adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    (root / "file_adapter").write_text("not a folder")
    out["file_adapter"] = str(root / "file_adapter")
    out["missing_adapter"] = str(root / "missing_adapter")
    return out


@pytest.fixture(scope="module")
def world(tiny_model, other_model, tmp_path_factory) -> dict[str, str]:
    """Models, data files and adapters (good, damaged, foreign) shared by every case."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad-input")
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps({"q": f"What is {i} + 1?", "a": f"{i + 1}"}) + "\n" for i in range(6)))
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "target": f"{i + 1}"}) + "\n" for i in range(3))
    )
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "chosen": f"{i + 1}", "rejected": f"{i + 5}"}) + "\n"
                             for i in range(4)))  # fmt: skip
    feedback = root / "feedback.jsonl"
    feedback.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "completion": f"{i + 1 + i % 2}", "label": i % 2 == 0}) + "\n"
                                for i in range(4)))  # fmt: skip
    rl = root / "rl.jsonl"
    rl.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": i + 1}) + "\n" for i in range(4))
    )
    sde = Path(__file__).parent / "assets" / "sde" / "masa_tiny.jsonl"
    big = root / "big-model"
    build_tokenizer(big)
    build_model(big, "llama", hidden_size=64, intermediate_size=96)
    good = Path(_train(tiny_model, qa, root / "good_adapter"))
    world = {"model": tiny_model, "other_model": other_model, "qa": str(qa), "prompts": str(prompts),
             "pairs": str(pairs), "feedback": str(feedback), "rl": str(rl), "sde": str(sde), "good": str(good),
             "other_size_adapter": random_adapter(str(big), root / "other_size_adapter"),
             "other_base_adapter": _foreign(other_model, root / "other_base_adapter"),
             "rm_other_size_adapter": _reward_model(str(big), root / "rm" / "other_size_adapter"),
             "rm_other_base_adapter": _reward_model(other_model, root / "rm" / "other_base_adapter"),
             **_damaged(good, root)}  # fmt: skip
    return world


def _argv(template: str, world: dict[str, str], folder: Path) -> list[str]:
    return [part.format(**world, d=folder) for part in shlex.split(template)]


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "FOLDER":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, world, tmp_path, capsys, monkeypatch):
    """Exit 2, no traceback, one `llm-tuning CMD: error:` line naming the file, row, field or flag."""
    import uvicorn

    name, template, files, expected = case
    if name.endswith("-no-gpu"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    monkeypatch.setenv("LLM_TUNING_DEBUG", "1")  # an unexpected exception raises here and fails the case

    def no_server(*args, **kwargs):
        raise AssertionError(f"{name}: the server would have started: the bad input was not caught")

    monkeypatch.setattr(uvicorn, "run", no_server)
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, files)
    argv = _argv(template, world, tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{name}: exit {code}\n{err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("llm-tuning "), err
    for part in expected:
        assert part.format(**world, d=tmp_path) in lines[0], f"{name}: {part!r} not in\n{lines[0]}"


SUBPROCESS_CASES = [
    ("train-lr-negative", "train --data {qa} --learning_rate -1", "--learning_rate must be > 0"),
    ("predict-truncated-adapter", "predict --model {model} --adapter {trunc_adapter} --data_path {prompts}",
     "is not a readable safetensors file"),
    ("tokenize-broken-json", "tokenize --model {model} --input_file {d}/bad.jsonl", "bad.jsonl, row 1: broken JSON"),
    ("yaml-syntax", "train {d}/r.yaml --data {qa}", "not valid YAML"),
    ("sde-render-bad-row", "sde render --input {d}/bad.jsonl --output {d}/o.jsonl", "bad.jsonl:1: not valid JSON"),
    ("argparse-bad-float", "train --data {qa} --learning_rate fast", "invalid float value: 'fast'"),
]  # fmt: skip


# one runs in `make test` (its imports are light); the others import torch and transformers (~20 s each here)
SUBPROCESS = [pytest.param(c, id=c[0], marks=[] if c[0] == "sde-render-bad-row" else [pytest.mark.slow])
              for c in SUBPROCESS_CASES]  # fmt: skip


@pytest.mark.parametrize("case", SUBPROCESS)
def test_real_entry_point_prints_no_traceback(case, world, tmp_path):
    name, template, expected = case
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    (tmp_path / "r.yaml").write_text("learning_rate: [1\n")
    src = Path(__file__).parents[1] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("LLM_TUNING_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "llm_tuning.cli", *_argv(template, world, tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
