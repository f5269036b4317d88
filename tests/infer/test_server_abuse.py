"""`llm-tuning serve` under abuse: abandoned requests, a huge prompt, malformed bodies, foreign Host and Origin
headers, wrong content types. A real uvicorn server on 127.0.0.1 in a thread, on a tiny random Llama with a
4,096-token context; timings are asserted as ratios to a long request measured in the same test."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import tiny_models
from test_server import start

from llm_tuning.config import ConfigError
from llm_tuning.infer.guard import allowed_hosts, host_name
from llm_tuning.infer.server import ServeConfig, build_app, build_engine

LONG = {"model": "tiny", "prompt": "hello world", "max_tokens": 400, "temperature": 0}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
PAGE_ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-long")
    tokenizer = tiny_models.build_tokenizer(folder)
    tiny_models.build_model(folder, "llama", vocab_size=len(tokenizer), max_position_embeddings=4096)
    cfg = ServeConfig(model=str(folder), served_name="tiny", max_tokens_limit=4000, max_request_bytes=2_000_000,
                      allowed_hosts=["my-box.lan"], cors_origins=[PAGE_ORIGIN])  # fmt: skip
    url, uvicorn_server, thread = start(build_app(build_engine(cfg)))
    yield url
    uvicorn_server.should_exit = True
    thread.join(5)


def timed(call, *args, **kwargs) -> tuple[float, object]:
    started = time.monotonic()
    result = call(*args, **kwargs)
    return time.monotonic() - started, result


def test_abandoned_requests_stop_generating(server):
    """Three clients give up on long requests (two plain, one streamed): the next request must not wait for them."""
    long_s, full = timed(httpx.post, server + "/v1/completions", json=LONG, timeout=120)
    assert full.json()["choices"][0]["finish_reason"] == "length"  # it really runs to 400 tokens
    for _ in range(2):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server + "/v1/completions", json=LONG, timeout=max(0.2, long_s / 10))
    with httpx.stream(
        "POST", server + "/v1/completions", json={**LONG, "stream": True}, timeout=120
    ) as stream:
        assert next(stream.iter_lines()).startswith("data: ")  # generation has started; now hang up
    short_s, short = timed(
        httpx.post, server + "/v1/completions", json={**LONG, "max_tokens": 1}, timeout=120
    )
    assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 1
    # without cancelling, the short request waits for ~3 long generations (about 2.7 x long_s)
    assert short_s < long_s / 2, (short_s, long_s)


def test_health_answers_while_a_huge_prompt_is_tokenized(server):
    huge = {"model": "tiny", "prompt": "hello world " * 75_000, "max_tokens": 1}  # 900 KB
    latencies = []
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(httpx.post, server + "/v1/completions", json=huge, timeout=120)
        while not future.done():
            seconds, health = timed(httpx.get, server + "/health", timeout=120)
            assert health.status_code == 200
            latencies.append(seconds)
        huge_s = time.monotonic() - started
    response = future.result()
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert len(latencies) >= 3 and max(latencies) < huge_s / 3, (latencies, huge_s)


def _json(body: dict, **change) -> bytes:
    return json.dumps({**body, **change}).encode()


BAD_BODIES = [
    # (endpoint, body, param the error must name, or None for a whole-body problem)
    ("chat", _json(CHAT, seed=2**64), "seed"),
    ("chat", _json(CHAT, seed=-(2**63) - 1), "seed"),
    ("chat", _json(CHAT, seed="abc"), "seed"),
    ("chat", _json(CHAT, seed=1.5), "seed"),
    ("chat", _json(CHAT)[:-1] + b', "temperature": NaN}', "temperature"),
    ("chat", _json(CHAT)[:-1] + b', "temperature": Infinity}', "temperature"),
    ("chat", _json(CHAT, temperature=-1), "temperature"),
    ("chat", _json(CHAT, temperature="hot"), "temperature"),
    ("chat", _json(CHAT, top_p=0), "top_p"),
    ("chat", _json(CHAT, top_p=1.5), "top_p"),
    ("chat", _json(CHAT)[:-1] + b', "top_p": NaN}', "top_p"),
    ("chat", _json(CHAT, max_tokens=0), "max_tokens"),
    ("chat", _json(CHAT, max_tokens=-5), "max_tokens"),
    ("chat", _json(CHAT, max_tokens=10**30), "max_tokens"),
    ("chat", _json(CHAT, max_tokens="many"), "max_tokens"),
    ("chat", _json(CHAT)[:-1] + b', "max_tokens": 1e400}', "max_tokens"),
    ("chat", _json(CHAT, messages="hi"), "messages"),
    ("chat", _json(CHAT, messages=None), "messages"),
    ("chat", _json(CHAT, messages=[1, 2]), "messages.0"),
    ("chat", _json(CHAT, messages=[{"content": "hi"}]), "messages.0.role"),
    ("chat", _json(CHAT, messages=[{"role": "user", "content": {"a": 1}}]), "messages.0.content"),
    (
        "chat",
        _json(CHAT, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
        "messages.0.content",
    ),  # fmt: skip
    ("chat", _json(CHAT, model=5), "model"),
    ("chat", _json(CHAT, model=""), "model"),
    ("chat", _json({k: v for k, v in CHAT.items() if k != "model"}), "model"),
    ("chat", _json(CHAT, stop=5), "stop"),
    ("chat", _json(CHAT, stop=["a"] * 5), "stop"),
    ("chat", _json(CHAT, stop=[""]), "stop"),
    ("chat", _json(CHAT, stop=[1]), "stop"),
    ("chat", _json(CHAT, stream="maybe"), "stream"),
    ("chat", _json(CHAT, stream_options="x"), "stream_options"),
    ("chat", _json(CHAT, n=2), "n"),
    ("chat", _json(CHAT, n=0), "n"),
    ("chat", _json(CHAT, messages=[{"role": "user", "content": "\ud800"}]), None),
    ("chat", b"[" * 100_000 + b"]" * 100_000, None),
    ("chat", b"\xff\xfe{}", None),
    ("chat", b"", None),
    ("chat", b"null", None),
    ("chat", b'"a string"', None),
    ("completions", _json(LONG, prompt=[1, 2, 3]), "prompt"),
    ("completions", _json(LONG, prompt=[]), "prompt"),
    ("completions", _json(LONG, prompt=["a", "b"]), "prompt"),
    ("completions", _json(LONG, prompt=None), "prompt"),
    ("completions", _json(LONG, prompt=""), "prompt"),
    ("completions", _json(LONG, echo=True), "echo"),
    ("completions", _json(LONG, logprobs=3), "logprobs"),
    ("completions", _json(LONG, prompt="x " * 5000), "messages"),  # over the context
]


@pytest.mark.parametrize(("endpoint", "body", "param"), BAD_BODIES)
def test_malformed_bodies_get_a_4xx_json_error(server, endpoint, body, param):
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    response = httpx.post(
        server + path, content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["param"] == param, error


@pytest.mark.parametrize("extra", [{"temperature": 1e-300}, {"top_p": 1e-300}, {"seed": 2**64 - 1},
                                   {"seed": -(2**63)}, {"messages": [{"role": "user"}]}])  # fmt: skip
def test_edge_values_are_served(server, extra):
    response = httpx.post(server + "/v1/chat/completions", json={**CHAT, **extra}, timeout=60)
    assert response.status_code == 200, response.text


def _get(server: str, path: str = "/v1/models", **headers) -> httpx.Response:
    return httpx.get(server + path, headers=headers, timeout=30)


def test_foreign_host_is_refused(server):
    port = server.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example"):
        for path in ("/v1/models", "/", "/v1/nothing"):
            response = _get(server, path, host=host)
            assert response.status_code == 403 and response.json()["error"]["code"] == "host_not_allowed"
        assert _get(server, "/health", host=host).json() == {"status": "ok"}  # for probes; it tells nothing
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", "my-box.lan:80"):
        assert _get(server, host=host).status_code == 200, host


def test_foreign_origin_is_refused_and_cors_follows_the_allow_list(server):
    refused = httpx.post(
        server + "/v1/chat/completions", json=CHAT, headers={"Origin": "http://evil.example"}
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    for origin in ("http://evil.example", "null", "http://localhost:3001"):
        assert _get(server, origin=origin).status_code == 403, origin
    same = httpx.post(server + "/v1/chat/completions", json=CHAT, headers={"Origin": server})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
    allowed = httpx.post(server + "/v1/chat/completions", json=CHAT, headers={"Origin": PAGE_ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == PAGE_ORIGIN
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(server + "/v1/chat/completions", headers={**preflight, "Origin": PAGE_ORIGIN})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == PAGE_ORIGIN
    evil = httpx.options(
        server + "/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers


@pytest.mark.parametrize(
    "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_post_bodies_must_be_json(server, kind):
    """A web page can POST text/plain or a form without a CORS preflight: such bodies are never served."""
    headers = {"Content-Type": kind} if kind else {}
    response = httpx.post(server + "/v1/chat/completions", content=json.dumps(CHAT), headers=headers)
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert (
        httpx.post(server + "/v1/chat/completions", content=json.dumps(CHAT), headers=charset).status_code
        == 200
    )


def test_huge_bodies_are_refused_before_they_are_read(server):
    def chunks():  # no Content-Length: the size is only known while reading
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    for content in (chunks(), b"{" + b" " * 2_000_001 + b"}"):
        response = httpx.post(server + "/v1/completions", content=content, timeout=60,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_host_and_origin_flags_are_checked():
    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM.:80") == "example.com"
    assert socket.gethostname().lower() in allowed_hosts("0.0.0.0", [])
    assert "10.0.0.5" in allowed_hosts("10.0.0.5", []) and "box" in allowed_hosts("127.0.0.1", ["box"])
    cfg = ServeConfig(allowed_hosts=["a.lan,B.lan"], cors_origins=["http://localhost:3000/,https://x.dev"])
    assert cfg.allowed_hosts == ["a.lan", "b.lan"] and cfg.cors_origins == [PAGE_ORIGIN, "https://x.dev"]
    from_yaml = ServeConfig(allowed_hosts=10, cors_origins="https://x.dev")  # a recipe's scalar, not a list
    assert from_yaml.allowed_hosts == ["10"] and from_yaml.cors_origins == ["https://x.dev"]
    for bad in ({"allowed_hosts": ["http://a.lan"]}, {"allowed_hosts": ["a.lan:80"]},
                {"cors_origins": ["evil.example"]}, {"cors_origins": ["http://x.dev/page"]}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ServeConfig(**bad)
