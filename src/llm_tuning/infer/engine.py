"""The model behind `llm-tuning serve`: its adapters and mixes by name, and generation for each request.

With `--engine batch` (the default) requests join one decode loop (`llm_tuning.infer.scheduler`): rows of
different adapters and sampling settings share every forward, and a request whose client left, or whose
stop string came, leaves the batch at the next step; past `--max_queue` waiting requests `enqueue` raises
a 429. With `--engine serial` (the previous behaviour) one request generates at a time under a lock, with
its adapter set inside it. Either way `Engine.run` streams decoded text through stop strings and reports
token counts. HTTP lives in `llm_tuning.infer.server`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_tuning.config import ConfigError, ModelOptions, check_choice, check_positive, option, validate_groups
from llm_tuning.data.encode import prompt_ids
from llm_tuning.data.formats import Message
from llm_tuning.infer.guard import check_hosts, check_origins
from llm_tuning.infer.openai_api import ApiError, ChatRequest, CompletionRequest, SamplingRequest, StopFilter
from llm_tuning.infer.scheduler import QueueFull, Scheduler, Ticket
from llm_tuning.models.adapters import (
    BASE,
    MIX,
    MIX_METHODS,
    AdapterSpec,
    check_mix_options,
    load_adapters,
    mix_adapters,
    parse_adapter_spec,
    parse_mix_spec,
    use_adapter,
)
from llm_tuning.models.batch_engine import GREEDY_BELOW, PEFT_BASE, BatchDecoder, GenRequest, UnsupportedModel
from llm_tuning.models.generate import _stop_ids
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.row_mix import Mix, check_row_mix, is_row_mix

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig(ModelOptions):
    """Serve a model and its adapters over an OpenAI-compatible HTTP API."""

    adapter: list[str] = option([], "adapter served by name, as [name=]folder[:weight]; repeatable")
    mix: list[str] = option(
        [], "a weighted mix served by name: NAME=ADAPTER:WEIGHT,ADAPTER:WEIGHT; repeatable"
    )
    mix_method: str = option("linear", f"how mixes combine: {', '.join(MIX_METHODS)}")
    mix_density: float | None = option(None, "share of weights kept by ties / dare / magnitude_prune")
    template: str = option("chat", "chat: the model's chat template; none: raw message text")
    system_prompt: str | None = option(None, "system message when a chat request has none")
    host: str = option(
        "127.0.0.1", "address to bind; anything but localhost exposes the server to the network"
    )
    port: int = option(8000, "TCP port")
    api_key: str | None = option(
        None, "require `Authorization: Bearer KEY` on /v1 (default: $LLM_TUNING_API_KEY)"
    )
    served_name: str | None = option(
        None, "the base model's id in /v1/models (default: the --model folder name)"
    )
    default_max_tokens: int = option(256, "max_tokens when a request gives none")
    max_tokens_limit: int = option(2048, "largest max_tokens a request may ask for")
    max_request_bytes: int = option(1_000_000, "largest request body accepted")
    allowed_hosts: list[str] = option(
        [],
        "Host names clients may reach the server by, besides loopback and --host (guards against DNS "
        "rebinding); * allows any",
    )
    cors_origins: list[str] = option(
        [],
        "web origins (scheme://host[:port]) whose pages may call the API; default: same origin only; * any",
    )
    engine: str = option(
        "batch", "batch: requests share a continuously batched decode loop; serial: one request at a time"
    )
    max_batch: int = option(16, "most requests decoded together (--engine batch)")
    max_queue: int = option(64, "requests that may wait for a place in the batch; past it: HTTP 429")
    backend: str = option(
        "llm-tuning",
        "llm-tuning: this package's engine; vllm: hand the model and adapters to "
        "vLLM's OpenAI server (a GPU machine with vLLM installed)",
    )
    vllm_args: str = option(
        "", "extra arguments for `vllm serve` with --backend vllm, e.g. '--gpu-memory-utilization 0.5'"
    )

    def __post_init__(self) -> None:
        validate_groups(self)
        self.api_key = self.api_key or os.environ.get("LLM_TUNING_API_KEY") or None
        check_choice("mix_method", self.mix_method, MIX_METHODS)
        check_choice("template", self.template, ("chat", "none"))
        check_choice("engine", self.engine, ("batch", "serial"))
        check_choice("backend", self.backend, ("llm-tuning", "vllm"))
        if self.vllm_args and self.backend != "vllm":
            raise ConfigError("--vllm_args is for --backend vllm; add --backend vllm or drop it")
        for name in ("default_max_tokens", "max_tokens_limit", "max_request_bytes", "max_batch", "max_queue"):
            check_positive(name, getattr(self, name))
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be a TCP port in 1..65535, got {self.port}")
        # a lower --max_tokens_limit also caps the default (a request without max_tokens never passes the limit)
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens_limit)
        check_mix_options(self.mix_method, self.mix_density)
        if not self.host.strip():
            raise ConfigError("--host is empty; use 127.0.0.1 (this machine only) or an address to bind")
        self.allowed_hosts = check_hosts(self.allowed_hosts)
        self.cors_origins = check_origins(self.cors_origins)


@dataclass
class Job:
    model: str  # the id the client asked for
    adapter: str | Mix | None  # the loaded adapter that answers it, or a per-row mix; None = base model
    input_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stops: list[str]
    ticket: Ticket | None = (
        None  # its place in the batch engine's queue (--engine batch), from Engine.enqueue
    )


@dataclass
class Outcome:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class _Cancel:
    """Stopping criterion: stop as soon as one of the events is set (stop string seen, client gone)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _Streamer:
    """Decodes the generated ids so far and passes on the new text (equal in sum to one final decode)."""

    def __init__(
        self, tokenizer: Any, on_text: Callable[[str], None], tokenizer_lock: threading.Lock
    ) -> None:
        self.tokenizer, self.on_text, self.tokenizer_lock = tokenizer, on_text, tokenizer_lock
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def _release(self, final: bool) -> None:
        with self.tokenizer_lock:
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if (
            (final or not text.endswith("\ufffd"))
            and text.startswith(self.sent)
            and len(text) > len(self.sent)
        ):
            piece, self.sent = text[len(self.sent) :], text
            self.on_text(piece)

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._release(final=False)

    def add(self, token: int) -> None:
        self.ids.append(token)
        self._release(final=False)

    def end(self) -> None:
        self._release(final=True)


class Engine:
    """The loaded model with its adapters, and the one lock generation runs under."""

    def __init__(self, model: Any, tokenizer: Any, variants: dict[str, str | None], cfg: ServeConfig) -> None:
        self.model, self.tokenizer, self.variants, self.cfg = model, tokenizer, variants, cfg
        self.lock = threading.Lock()  # one generation at a time; the adapter is set inside it
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to use from two threads at once
        self.stop_ids = sorted(_stop_ids(tokenizer))
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.scheduler = (
            Scheduler(model, self.stop_ids, cfg.max_batch, cfg.max_queue)
            if cfg.engine == "batch" and _batchable(model)
            else None
        )

    def model_ids(self) -> list[str]:
        """Ids for /v1/models: the base model's name first (`base` is an alias), adapters, mixes."""
        return [name for i, name in enumerate(self.variants) if name != BASE or i == 0]

    def resolve(self, model: str) -> str | Mix | None:
        """The adapter name for `model` (None: the base model), or the per-row mix it spells."""
        if model not in self.variants and is_row_mix(model):
            return self._row_mix(model)
        if model not in self.variants:
            raise ApiError(404, f"The model {model!r} does not exist here; served models: {', '.join(self.model_ids())}",
                           "model", "model_not_found")  # fmt: skip
        return self.variants[model]

    def _row_mix(self, model: str) -> Mix:
        """`math:0.7+style:0.3`: computed per row by the batch engine (or, serially, over the request's whole
        forward by `use_adapter`), exactly as a `cat` mix would."""
        try:
            return check_row_mix(model, self.model)
        except ConfigError as err:
            raise ApiError(400, str(err), "model", "invalid_mix") from None

    def chat_job(self, req: ChatRequest) -> Job:
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages
        ]
        return self._job(req, messages, self.cfg.template)

    def completion_job(self, req: CompletionRequest) -> Job:
        """A completion's prompt is raw text, tokenized as `--template none` training tokenizes a prompt."""
        return self._job(req, [{"role": "user", "content": req.prompt_string()}], "none")

    def _job(self, req: SamplingRequest, messages: list[Message], template: str) -> Job:
        adapter = self.resolve(req.model)
        with self.tokenizer_lock:
            ids = prompt_ids(self.tokenizer, messages, template, self.cfg.system_prompt)
        if not ids:
            raise ApiError(
                400, "the prompt is empty", "prompt" if isinstance(req, CompletionRequest) else "messages"
            )
        asked, limit = req.token_limit(), self.cfg.max_tokens_limit
        if asked is not None and asked > limit:
            raise ApiError(400, f"max_tokens is {asked}; this server allows at most {limit}", "max_tokens")
        room = self.context - len(ids) if self.context else None
        if room is not None and (room <= 0 or (asked is not None and asked > room)):
            raise ApiError(400, f"the prompt has {len(ids)} tokens and max_tokens is {asked}; together they must fit "
                           f"the model's context of {self.context} tokens", "messages", "context_length_exceeded")  # fmt: skip
        max_tokens = asked or min(self.cfg.default_max_tokens, room or self.cfg.default_max_tokens)
        return Job(req.model, adapter, ids, max_tokens, req.temperature, req.top_p, req.seed, req.stops())

    def enqueue(self, job: Job) -> None:
        """Give `job` its place in the batch engine's queue now (before a response starts): 429 when full."""
        if self.scheduler is None or job.ticket is not None:
            return
        greedy = job.temperature < GREEDY_BELOW
        request = GenRequest(job.input_ids, job.adapter or PEFT_BASE, job.max_tokens, 0.0 if greedy else job.temperature,
                             job.top_p, seed=job.seed)  # fmt: skip
        try:
            job.ticket = self.scheduler.submit(request)
        except QueueFull as err:
            raise ApiError(429, f"the server is busy: {err}; retry shortly", kind="rate_limit_error",
                           code="queue_full") from None  # fmt: skip

    def run(self, job: Job, emit: Callable[[str], None], cancel: threading.Event) -> Outcome:
        """Generate for `job`, passing text pieces to `emit` as they come (stop strings cut out)."""
        if self.scheduler is not None:
            return self._run_batched(job, emit, cancel)
        stop_filter, stopped, pieces = StopFilter(job.stops), threading.Event(), []

        def on_text(piece: str) -> None:
            out = stop_filter.feed(piece)
            if out:
                pieces.append(out)
                emit(out)
            if stop_filter.stopped:
                stopped.set()

        streamer = _Streamer(self.tokenizer, on_text, self.tokenizer_lock)
        sampling = {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": 0}
        kwargs = (
            sampling
            if job.temperature >= GREEDY_BELOW
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([job.input_ids], device=device)
        with self.lock:
            if cancel.is_set():
                return Outcome("", "stop", len(job.input_ids), 0)
            if job.seed is not None:
                torch.manual_seed(job.seed)
            with use_adapter(self.model, job.adapter), torch.inference_mode():
                self.model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=job.max_tokens,
                    eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id, streamer=streamer,
                    stopping_criteria=[_Cancel(stopped, cancel)], **kwargs,
                )  # fmt: skip
        return self._outcome(job, stop_filter, pieces, emit, streamer)

    def _run_batched(self, job: Job, emit: Callable[[str], None], cancel: threading.Event) -> Outcome:
        """Wait for `job`'s tokens from the decode loop; decode and filter them here, off the loop's thread."""
        self.enqueue(job)
        ticket = job.ticket
        ticket.also_cancel_on(cancel)  # the client left: the row leaves the batch at the next step
        stop_filter, pieces = StopFilter(job.stops), []

        def on_text(piece: str) -> None:
            out = stop_filter.feed(piece)
            if out:
                pieces.append(out)
                emit(out)

        streamer = _Streamer(self.tokenizer, on_text, self.tokenizer_lock)
        try:
            for token in ticket.tokens():
                streamer.add(token)
                if stop_filter.stopped:
                    break
            else:
                streamer.end()
        finally:
            ticket.stop.set()  # a stop string, an error, or this thread interrupted: free the row
        return self._outcome(job, stop_filter, pieces, emit, streamer)

    def _outcome(self, job: Job, stop_filter: StopFilter, pieces: list[str], emit: Callable[[str], None],
                 streamer: Any) -> Outcome:  # fmt: skip
        """The reply once generation ended: what the stop filter still held is flushed, and why it ended."""
        tail = stop_filter.flush()
        if tail:
            pieces.append(tail)
            emit(tail)
        ended = stop_filter.stopped or (streamer.ids and streamer.ids[-1] in self.stop_ids)
        return Outcome("".join(pieces), "stop" if ended else "length", len(job.input_ids), len(streamer.ids))

    def complete(self, job: Job) -> Outcome:
        return self.run(job, lambda piece: None, threading.Event())


def _batchable(model: Any) -> bool:
    """Whether the batch engine can run this model (one probe forward); if not, serve one request at a time."""
    try:
        BatchDecoder(model, []).add([(0, GenRequest([0], None, 1))])
    except UnsupportedModel as err:
        logger.warning("%s: serving one request at a time (as --engine serial)", err)
        return False
    return True


def build_engine(cfg: ServeConfig) -> Engine:
    """Load the model, every --adapter by name, and every mix; name them for `model` fields."""
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code)
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    base_name = cfg.served_name or Path(cfg.model).name
    variants: dict[str, str | None] = {base_name: None, BASE: None}
    mixes = [parse_mix_spec(text, {s.name: s for s in specs}) for text in cfg.mix]
    if any(s.weight != 1.0 for s in specs):  # weighted --adapter specs: serve their mix too, as predict does
        mixes.append((MIX, specs))
    if specs:
        model = load_adapters(model, [AdapterSpec(s.name, s.path) for s in specs])
        variants.update({s.name: s.name for s in specs})
    for name, mix_specs in mixes:
        if name in variants:
            raise ConfigError(f"--mix {name}: that name is already taken by {name!r}; choose another")
        variants[name] = mix_adapters(model, mix_specs, cfg.mix_method, cfg.mix_density, name)
    logger.info("serving %s", ", ".join(n for n in variants if n != BASE))
    return Engine(model, tokenizer, variants, cfg)
