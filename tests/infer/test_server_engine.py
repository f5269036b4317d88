"""`serve --engine batch`: requests of two adapters share forwards and equal offline greedy answers, 429 past
--max_queue, a client that hangs up mid-stream leaves the batch while others are served; `--engine serial`
(the old path) answers the same. A real uvicorn server on 127.0.0.1 in a thread, on a tiny random Llama."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_server import QUESTION, offline, random_adapter, start

from llm_tuning.infer.server import ServeConfig, build_app, build_engine

QUEUE = 8  # --max_queue


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("served-engine")
    adapters = [f"math={random_adapter(tiny_model, root / 'math', 4, ['q_proj', 'v_proj'], 1)}",
                f"style={random_adapter(tiny_model, root / 'style', 8, ['k_proj', 'o_proj'], 2)}"]  # fmt: skip
    cfg = ServeConfig(model=tiny_model, adapter=adapters, served_name="tiny", max_tokens_limit=200,
                      max_batch=8, max_queue=QUEUE)  # fmt: skip
    engine = build_engine(cfg)
    decoder, forwards, finished = engine.scheduler.decoder, [], []
    gate = threading.Event()
    gate.set()
    forward, step = decoder._forward, decoder.step

    def recording_forward(ids, mask, pos, cache, adapters, keep=1):
        forwards.append(list(adapters))
        return forward(ids, mask, pos, cache, adapters, keep)

    def gated_step():
        gate.wait()
        time.sleep(0.005)  # a step as slow as a small real model's, so that requests overlap
        done = step()
        finished.extend(result for _, result in done)
        return done

    decoder._forward, decoder.step = recording_forward, gated_step
    url, server, thread = start(build_app(engine))
    yield {"url": url, "engine": engine, "adapters": adapters, "model": tiny_model, "forwards": forwards,
           "gate": gate, "finished": finished}  # fmt: skip
    gate.set()
    server.should_exit = True
    thread.join(5)


def chat(url: str, model: str, max_tokens: int = 12, **kw) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens,
            "temperature": 0, **kw}  # fmt: skip
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_two_adapters_share_forwards_and_equal_offline_answers(served):
    math, style = served["adapters"]
    expected = {
        "math": offline(served, [math], QUESTION, 12).text,
        "style": offline(served, [style], QUESTION, 12).text,
    }
    served["forwards"].clear()
    jobs = ["math", "style"] * 3
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(lambda m: chat(served["url"], m), jobs))
    assert [r.json()["choices"][0]["message"]["content"].strip() for r in replies] == [
        expected[m] for m in jobs
    ]
    assert any({"math", "style"} <= set(names) for names in served["forwards"])  # one forward, both adapters


def test_429_when_the_queue_is_full(served):
    engine, gate = served["engine"], served["gate"]
    wait_for(lambda: engine.scheduler.stats() == (0, 0))
    gate.clear()  # hold the decode loop: the first request sits in the batch, the next QUEUE wait
    with ThreadPoolExecutor(QUEUE + 1) as pool:
        first = pool.submit(chat, served["url"], "math")
        wait_for(lambda: engine.scheduler.stats() == (1, 0))
        waiting = [pool.submit(chat, served["url"], "style") for _ in range(QUEUE)]
        wait_for(lambda: engine.scheduler.stats() == (1, QUEUE))
        refused = chat(served["url"], "math")
        gate.set()
        assert {f.result().status_code for f in [first, *waiting]} == {200}
    assert refused.status_code == 429
    assert (
        refused.json()["error"]["code"] == "queue_full" and "max_queue" in refused.json()["error"]["message"]
    )


def test_a_client_leaving_mid_stream_leaves_the_batch_and_others_are_served(served):
    math = served["adapters"][0]
    expected = offline(served, [math], QUESTION, 40).text
    served["finished"].clear()
    body = {"model": "style", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 200,
            "temperature": 0, "stream": True}  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        with httpx.stream("POST", served["url"] + "/v1/chat/completions", json=body, timeout=60) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")  # streaming has begun
            other = pool.submit(chat, served["url"], "math", 40)
            next(lines)
        # hung up: the other request is still answered in full, and correctly
        assert other.result().json()["choices"][0]["message"]["content"].strip() == expected
    wait_for(lambda: any(r.finish_reason == "cancelled" for r in served["finished"]))
    left = next(r for r in served["finished"] if r.finish_reason == "cancelled")
    assert len(left.tokens) < 200  # it left the batch long before its 200 tokens


def test_serial_engine_answers_the_same(served):
    cfg = ServeConfig(model=served["model"], adapter=served["adapters"], served_name="tiny", engine="serial")
    url, server, thread = start(build_app(build_engine(cfg)))
    try:
        for model in ("tiny", "math", "style", "math:0.7+style:0.3"):
            assert (
                chat(url, model).json()["choices"][0]["message"]
                == chat(served["url"], model).json()["choices"][0]["message"]
            )
    finally:
        server.should_exit = True
        thread.join(5)


def test_a_per_request_mix_equals_the_cat_mix_and_bad_mixes_get_400(served):
    math, style = served["adapters"]
    expected = offline(served, [f"{math}:0.7", f"{style}:0.3"], QUESTION, 12, method="cat")
    for model in ("math:0.7+style:0.3", "math:0.7+style:0.3@cat"):
        reply = chat(served["url"], model).json()
        assert reply["choices"][0]["message"]["content"].strip() == expected.text and reply["model"] == model
    assert chat(served["url"], "math:0.7+style:0.3").json() != chat(served["url"], "math").json()["choices"]
    for model, words in [("math:0.7+nope:0.3", "no adapter named 'nope'"), ("math:x+style:1", "not a number"),
                         ("math:0.5+math:0.5", "named twice"), ("math:0.7+style:0.3@linear", "only cat")]:  # fmt: skip
        response = chat(served["url"], model)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "model" and error["code"] == "invalid_mix" and words in error["message"]


def test_a_model_the_engine_cannot_batch_is_served_one_request_at_a_time(tmp_path):
    """A sliding-window cache cannot be merged by left padding: the server says so and runs the serial path."""
    import tiny_models

    tokenizer = tiny_models.build_tokenizer(tmp_path)
    tiny_models.build_model(tmp_path, "mistral", vocab_size=len(tokenizer), sliding_window=8)
    engine = build_engine(ServeConfig(model=str(tmp_path), served_name="tiny"))
    assert engine.scheduler is None
    url, server, thread = start(build_app(engine))
    try:
        reply = chat(url, "tiny", max_tokens=4)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 4
    finally:
        server.should_exit = True
        thread.join(5)
