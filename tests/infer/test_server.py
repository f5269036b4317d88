"""`llm-tuning serve` against the official `openai` client: a real uvicorn server on 127.0.0.1 in a thread."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest
import tiny_models
from chromium import AVAILABLE, Chromium
from live_server import free_port, start  # noqa: F401  (other test modules import them from here)

from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.template import prompt_text
from llm_tuning.infer.openai_api import StopFilter
from llm_tuning.infer.server import ServeConfig, build_app, build_engine
from llm_tuning.models.adapters import apply_adapters, parse_adapter_spec
from llm_tuning.models.generate import GenerationOptions, generate
from llm_tuning.models.load import load_model, load_tokenizer

KEY = "test-key"
QUESTION = "What is 12 + 7?"


def random_adapter(base: str, folder: Path, rank: int, targets: list[str], seed: int) -> str:
    return tiny_models.random_adapter(base, folder, rank, targets, seed, alpha=rank)


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """One engine (math, style, and the mix `both`) behind two servers: with an API key, and without (for the browser)."""
    root = tmp_path_factory.mktemp("served")
    adapters = [f"math={random_adapter(tiny_model, root / 'math', 4, ['q_proj', 'v_proj'], 1)}",
                f"style={random_adapter(tiny_model, root / 'style', 8, ['k_proj', 'o_proj'], 2)}"]  # fmt: skip
    cfg = ServeConfig(model=tiny_model, adapter=adapters, mix=["both=math:0.5,style:0.5"], mix_method="cat",
                      api_key=KEY, served_name="tiny", max_tokens_limit=64, max_request_bytes=20_000)  # fmt: skip
    engine = build_engine(cfg)
    url, server, thread = start(build_app(engine))
    open_engine = build_engine(ServeConfig(**{**cfg.__dict__, "api_key": None}))
    open_url, open_server, open_thread = start(build_app(open_engine))
    yield {"url": url, "open_url": open_url, "adapters": adapters, "model": tiny_model}
    server.should_exit = open_server.should_exit = True
    thread.join(5)
    open_thread.join(5)


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key=KEY, max_retries=0)


def offline(served, adapters: list[str], text: str, max_tokens: int, chat: bool = True, method: str = "cat"):
    """What `predict` / `chat` would answer with these adapters (greedy)."""
    tokenizer = load_tokenizer(served["model"])
    model = apply_adapters(
        load_model(served["model"], device="cpu"), [parse_adapter_spec(a) for a in adapters], method
    )
    prompt = prompt_text(tokenizer, prompt_messages(text)) if chat else text
    return generate(
        model, tokenizer, [prompt], GenerationOptions(max_new_tokens=max_tokens), add_special_tokens=not chat
    )[0]


def ask(client, model: str, **kw) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                           **{"max_tokens": 12, "temperature": 0, **kw})  # fmt: skip
    return reply.choices[0].message.content


def test_models_listed_and_auth_required(served, client):
    assert [m.id for m in client.models.list()] == ["tiny", "math", "style", "both"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served["url"] + "/v1", api_key="wrong", max_retries=0).models.list()
    response = httpx.get(served["url"] + "/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_adapter_selection_matches_offline_generation(served, client):
    math, style = served["adapters"]
    for model, adapters in [("tiny", []), ("base", []), ("math", [math]), ("style", [style]),
                            ("both", [f"{math}:0.5", f"{style}:0.5"])]:  # fmt: skip
        expected = offline(served, adapters, QUESTION, 12)
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                               max_tokens=12, temperature=0)  # fmt: skip
        assert reply.choices[0].message.content.strip() == expected.text, model
        assert reply.model == model and reply.object == "chat.completion"
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
            expected.prompt_tokens,
            expected.new_tokens,
        )
        assert reply.choices[0].finish_reason == ("length" if expected.new_tokens == 12 else "stop")
    assert len({ask(client, m) for m in ("tiny", "math", "style", "both")}) == 4


def test_streaming_equals_non_streaming(client):
    full = ask(client, "math")
    chunks = list(client.chat.completions.create(model="math", messages=[{"role": "user", "content": QUESTION}],
                                                 max_tokens=12, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_completions_streamed_and_not(served, client):
    expected = offline(served, [served["adapters"][1]], "hello world", 10, chat=False)
    reply = client.completions.create(model="style", prompt="hello world", max_tokens=10, temperature=0)
    assert (
        reply.choices[0].text.strip() == expected.text and reply.usage.prompt_tokens == expected.prompt_tokens
    )
    stream = client.completions.create(
        model="style", prompt="hello world", max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == reply.choices[0].text


def test_stop_strings_and_seeds(client):
    full = ask(client, "both", max_tokens=16)
    stop = full[3:5]
    cut = client.chat.completions.create(model="both", messages=[{"role": "user", "content": QUESTION}],
                                         max_tokens=16, temperature=0, stop=[stop])  # fmt: skip
    assert (
        cut.choices[0].message.content == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"
    )
    sampled = [ask(client, "math", temperature=1.0, top_p=0.9, seed=seed) for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_stop_filter_holds_back_a_possible_stop():
    f = StopFilter(["END"])
    assert [f.feed("abc E"), f.feed("N"), f.feed("Dxyz")] == ["abc", " ", ""] and f.stopped
    g = StopFilter(["END"])
    assert g.feed("abEN") + g.flush() == "abEN" and not g.stopped


def ask_streamed(client, model: str) -> str:
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                            max_tokens=12, temperature=0, stream=True)  # fmt: skip
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_concurrent_requests_for_two_adapters(client):
    sequential = {m: ask(client, m) for m in ("math", "style")}
    jobs = [("math", ask), ("style", ask_streamed), ("style", ask), ("math", ask_streamed)] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: job[1](client, job[0]), jobs))
    assert answers == [sequential[m] for m, _ in jobs]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"model": "math"}).encode(), 400, "messages"),
        (json.dumps({"model": "math", "messages": []}).encode(), 400, "messages"),
        (json.dumps({"model": "math", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "math", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}).encode(), 400, "temperature"),
        (json.dumps({"model": "math", "messages": [{"role": "robot", "content": "hi"}]}).encode(), 400, "messages.0.role"),
        (json.dumps({"model": "math", "messages": [{"role": "user", "content": "hi"}], "n": 2}).encode(), 400, "n"),
        (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404, "model"),
        (json.dumps({"model": "math", "messages": [{"role": "user", "content": "x" * 30_000}]}).encode(), 413, None),
        (json.dumps({"model": "math", "messages": [{"role": "user", "content": "hi " * 300}]}).encode(), 400, "messages"),
    ],
)  # fmt: skip
def test_malformed_requests_get_openai_errors(served, body, status, param):
    response = httpx.post(served["url"] + "/v1/chat/completions", content=body,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["param"] == param


def test_chat_page_and_unknown_route(served):
    page = httpx.get(served["url"] + "/")
    assert (
        page.status_code == 200
        and "<title>llm-tuning chat</title>" in page.text
        and "http" not in page.text.split("<script>")[1]
    )
    missing = httpx.get(served["url"] + "/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


PAGE_STATE = """JSON.stringify({
  models: [...document.querySelectorAll('#model option')].map(o => o.value),
  reply: document.querySelector('.msg.assistant[data-done]')?.textContent ?? null,
  error: document.querySelector('.msg.error')?.textContent ?? null,
})"""


@pytest.mark.skipif(not AVAILABLE, reason="headless Chromium is not installed (apt-get install chromium)")
def test_chat_page_in_headless_chromium(served, client, tmp_path):
    """The page lists the models and streams a reply with fetch: the same text the API gives."""
    expected = ask(client, "math", max_tokens=8)
    with Chromium(tmp_path / "profile") as browser:
        page = browser.open(
            f"{served['open_url']}/?model=math&temperature=0&max_tokens=8&q={quote(QUESTION)}"
        )
        done = "(s => s.reply !== null || s.error !== null)(JSON.parse(" + PAGE_STATE + "))"
        page.wait(done, timeout=20, poll=0.05)
        state = json.loads(page.eval(PAGE_STATE))
    assert state["models"] == ["tiny", "math", "style", "both"]
    assert state["error"] is None and state["reply"] == expected
