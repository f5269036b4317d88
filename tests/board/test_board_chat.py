"""Chat and mix: base, each adapter and the slider-weighted mix answer as the CLI's code does; streamed
chat gives the same text; the mix is saved as an adapter folder (`mix`) by a job."""

from __future__ import annotations

import json

import pytest
import tiny_models
from board_support import client, wait_job

from llm_tuning.board.jobs import JobManager
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.template import prompt_text
from llm_tuning.models.adapters import AdapterSpec, apply_adapters
from llm_tuning.models.generate import GenerationOptions, generate
from llm_tuning.models.load import load_model, load_tokenizer

QUESTION = "What is 12 + 7?"


@pytest.fixture()
def adapters(workdir):
    base = str(workdir / "tiny")
    tiny_models.random_adapter(base, workdir / "weights" / "math", 4, ["q_proj", "v_proj"], 1, alpha=4)
    tiny_models.random_adapter(base, workdir / "weights" / "style", 8, ["k_proj", "o_proj"], 2, alpha=8)
    return ["weights/math", "weights/style"]


def offline(workdir, weights: dict[str, float], tokens: int = 8) -> str:
    """What predict / chat answer with these adapters mixed by `cat` (the board's method)."""
    model = str(workdir / "tiny")
    tokenizer = load_tokenizer(model)
    specs = [AdapterSpec(path.replace("/", "_"), str(workdir / path), w) for path, w in weights.items()]
    peft = apply_adapters(load_model(model, device="cpu"), specs, "cat")
    prompt = prompt_text(tokenizer, prompt_messages(QUESTION))
    return generate(peft, tokenizer, [prompt], GenerationOptions(max_new_tokens=tokens))[0].text


def test_compare_sliders_and_streamed_chat(workdir, adapters):
    api = client(workdir)
    assert api.get("/api/adapters").json()["adapters"] == adapters
    pick = lambda wm, ws: {"model": "tiny", "max_new_tokens": 8, "prompt": QUESTION,  # noqa: E731
                           "adapters": [{"path": "weights/math", "weight": wm}, {"path": "weights/style", "weight": ws}]}  # fmt: skip
    first = api.post("/api/chat/compare", json=pick(0.5, 0.5)).json()
    assert first["variants"] == ["base", "weights_math", "weights_style", "mix"]
    assert first["answers"]["weights_math"] == offline(workdir, {"weights/math": 1.0})
    assert first["answers"]["mix"] == offline(workdir, {"weights/math": 0.5, "weights/style": 0.5})
    moved = api.post(
        "/api/chat/compare", json=pick(1.5, 0.2)
    ).json()  # a slider moved: re-mixed, not reloaded
    assert moved["answers"]["mix"] == offline(workdir, {"weights/math": 1.5, "weights/style": 0.2})
    assert moved["answers"]["mix"] != first["answers"]["mix"]
    body = {**pick(1.5, 0.2), "variant": "mix", "messages": [{"role": "user", "content": QUESTION}]}
    with api.stream("POST", "/api/chat/stream", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert "".join(e.get("text", "") for e in events).strip() == moved["answers"]["mix"]
    assert events[-1] == {"done": True, "variant": "mix"} and not any("error" in e for e in events)


def test_bad_chat_requests(workdir, adapters):
    api = client(workdir)
    no_adapter = api.post(
        "/api/chat/compare", json={"model": "tiny", "adapters": [{"path": "data"}], "prompt": "hi"}
    )
    assert no_adapter.status_code == 400 and "no adapter_config.json" in no_adapter.json()["error"]
    too_long = api.post("/api/chat/compare", json={"model": "tiny", "prompt": "hi", "max_new_tokens": 10**6})
    assert too_long.status_code == 400 and "max_new_tokens" in too_long.json()["error"]
    unknown = api.post("/api/chat/stream", json={"model": "tiny", "variant": "nope", "messages": []})
    assert unknown.status_code == 400 and "variant 'nope'" in unknown.json()["error"]
    exists = api.post("/api/chat/save", json={"command": "mix", "model": "tiny", "output": "weights/math",
                                              "adapters": [{"path": "weights/math", "weight": 1}]})  # fmt: skip
    assert exists.status_code == 409 and (workdir / "weights/math/adapter_config.json").is_file()


@pytest.mark.slow
def test_save_the_mix_as_an_adapter_folder(workdir, adapters):
    api = client(workdir)
    body = {"command": "mix", "model": "tiny", "output": "weights/both",
            "adapters": [{"path": "weights/math", "weight": 0.5}, {"path": "weights/style", "weight": 0.5}]}  # fmt: skip
    job = wait_job(JobManager(workdir), api.post("/api/chat/save", json=body).json()["id"])
    assert job["status"] == "done", job["log_tail"]
    assert job["shell"] == (
        "llm-tuning mix --model tiny --output weights/both --adapter weights/math:0.5 "
        "--adapter weights/style:0.5 --method cat"
    )
    saved = api.post("/api/chat/compare", json={"model": "tiny", "max_new_tokens": 8, "prompt": QUESTION,
                                                "adapters": [{"path": "weights/both"}]}).json()  # fmt: skip
    assert saved["answers"]["weights_both"] == offline(workdir, {"weights/math": 0.5, "weights/style": 0.5})


def test_one_weighted_adapter_is_a_mix_and_weight_one_is_not(workdir, adapters):
    api = client(workdir)
    ask = lambda w: api.post("/api/chat/compare", json={"model": "tiny", "max_new_tokens": 8, "prompt": QUESTION,  # noqa: E731
                                                        "adapters": [{"path": "weights/math", "weight": w}]}).json()  # fmt: skip
    half = ask(0.5)
    assert half["variants"] == ["base", "weights_math", "mix"]
    assert half["answers"]["mix"] == offline(workdir, {"weights/math": 0.5})
    assert ask(1.0)["variants"] == ["base", "weights_math"] and ask(2.0)["variants"] == [
        "base",
        "weights_math",
        "mix",
    ]
