"""Speed levers that must not change the loss: checked on the actual model before training starts.

    llm-tuning train --data train.jsonl                      # packing and lean logits on, checked
    llm-tuning train --data train.jsonl --packing false --lean_logits false   # the plain padded path

Padding-free packing relies on the model honouring restarting `position_ids` as sequence boundaries
(transformers' Llama, Qwen2, Mistral, Gemma, GPT-2... do; a model with its own remote code may not and
would silently attend across rows). Lean logits rely on the model calling its output layer once on the
final hidden states. `check_levers` compares the loss of two random rows through each lever with the
plain padded loss the model computes itself; a lever that disagrees is switched off with a warning.
Packing is compared token by token (a leak across rows shows in the later row's tokens, where a mean
over both rows would dilute it), and it is switched off without trying on models whose forward takes no
`position_ids` (RWKV, Mamba) or that carry a recurrent state (SSM / linear-attention layers in hybrids):
their state runs from one packed row into the next. A non-finite reference loss stops the run.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llm_tuning.data.collate import PadCollator
from llm_tuning.data.encode import IGNORE_INDEX
from llm_tuning.data.packing import PackedCollator
from llm_tuning.models.load import NonFiniteError, likely_nan_cause
from llm_tuning.train.lean_mlp import plain_mlp, use_lean_mlp
from llm_tuning.train.loss import lean_forward

logger = logging.getLogger(__name__)

PROBE_LENGTHS = (7, 11)


@dataclass
class Levers:
    packing: bool
    lean_logits: bool
    lean_mlp: bool = False


def probe_rows(vocab_size: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Two rows of random token ids; the first 3 tokens of each are prompt (label -100)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in PROBE_LENGTHS:
        ids = torch.randint(0, vocab_size, (n,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    return rows


def _on(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def probe_loss(model: Any, rows: list[dict], packing: bool, lean: bool) -> float:
    """The mean token loss of `rows` through the chosen path (no gradient)."""
    device = next(model.parameters()).device
    batch = _on((PackedCollator() if packing else PadCollator(0))(rows), device)
    with torch.no_grad():
        if lean:
            return float(lean_forward(model, batch, None)[0])
        return float(model(**batch).loss)


# layers whose state flows along the sequence whatever the position_ids say
RECURRENT_LAYER = re.compile(r"mamba|rwkv|recurrent|rglru|linearattention|gateddeltanet|mlstm|slstm|shortconv|"
                             r"conv$", re.IGNORECASE)  # fmt: skip


def packing_blocker(model: Any) -> str | None:
    """Why packed rows would leak into each other in this model (None: the numeric check decides)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__} takes no position_ids, so it cannot tell packed rows apart"
    for module in base.modules():
        name = type(module).__name__
        if RECURRENT_LAYER.search(name) and not name.endswith(("MLP", "Norm")):
            return f"its {name} layers carry a state from one packed row into the next"
    return None


def token_losses(model: Any, rows: list[dict], packing: bool) -> torch.Tensor:
    """The loss of every trained token of `rows`, in order, through the padded or packed path."""
    device = next(model.parameters()).device
    batch = _on((PackedCollator() if packing else PadCollator(0))(rows), device)
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits.float()  # (batch, seq, vocab)
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    # PackedCollator already masks each row's first label, so the trained tokens line up with the padded ones
    return losses[labels[:, 1:].flatten() != IGNORE_INDEX]


def output_vocab_size(model: Any) -> int:
    """The output vocabulary: multimodal configs (Gemma-3, Fuyu) keep vocab_size in their text config."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def check_finite_start(model: Any, reference: float) -> None:
    """Stop before training when the model's own loss on two random rows is already NaN or inf."""
    if not torch.isfinite(torch.tensor(reference)):
        raise NonFiniteError(
            f"the model's loss before any training is {reference} on random tokens, so training cannot work: "
            f"{likely_nan_cause(model)}"
        )


def _tolerance(model: Any) -> float:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return 1e-4 if dtype == torch.float32 else 3e-2


def check_levers(model: Any, packing: bool, lean_logits: bool, lean_mlp: bool = False) -> Levers:
    """The levers asked for, minus any whose probe loss differs from the plain padded loss; the lean MLP
    (train/lean_mlp.py) is switched on here, on the gated MLPs it applies to, and off again if it differs."""
    was_training = model.training
    model.eval()  # no dropout: the paths must agree exactly
    try:
        rows = probe_rows(output_vocab_size(model))
        reference = probe_loss(model, rows, packing=False, lean=False)
        check_finite_start(model, reference)
        if not (packing or lean_logits or lean_mlp):
            return Levers(False, False)
        tol = _tolerance(model) * max(abs(reference), 1.0)
        blocker = packing_blocker(model) if packing else None
        if blocker:
            logger.info("--packing switched off: %s", blocker)
        levers = Levers(packing and not blocker, lean_logits, lean_mlp and use_lean_mlp(model) > 0)
        for name, kwargs in (("lean_mlp", {"packing": False, "lean": False}),
                             ("packing", {"packing": True, "lean": False}),
                             ("lean_logits", {"packing": False, "lean": True})):  # fmt: skip
            if not getattr(levers, name):
                continue
            try:
                if name == "packing":  # token by token: a leak into the later row is not averaged away
                    plain, packed = token_losses(model, rows, False), token_losses(model, rows, True)
                    worst = float((plain - packed).abs().max())
                    agrees, detail = worst <= tol, f"a token's loss differs by {worst:.2e}"
                else:
                    value = probe_loss(model, rows, **kwargs)
                    agrees = abs(value - reference) <= tol
                    detail = f"loss {value:.6f} vs {reference:.6f}"
            except (ValueError, RuntimeError, TypeError) as err:
                agrees, detail = False, f"{type(err).__name__}: {err}"
            if not agrees:
                logger.warning(
                    "--%s switched off: this model gives a different loss with it (%s)", name, detail
                )
                setattr(levers, name, False)
                if name == "lean_mlp":
                    plain_mlp(model)
    finally:
        model.train(was_training)
    return levers


def set_threads(count: int) -> None:
    """Intra-op CPU threads (0: torch's default, one per physical core; torchrun sets 1 per process)."""
    if count > 0:
        torch.set_num_threads(count)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def set_mmap_threshold(megabytes: int) -> bool:
    """On Linux (glibc), give blocks of `megabytes` MiB and more back to the OS as soon as they are freed.

    glibc raises its mmap threshold every time a large block is freed (up to 32 MiB), after which the
    activations of the next step come from the heap and freed ones stay in the process: CPU training's
    resident memory grows well past what is live. A fixed threshold stops that, at the price of a page
    fault for every large tensor (bench/README.md: 4 MiB gave -10% peak RSS for -12% tokens/s on
    SmolLM2-135M). 0 leaves glibc's behaviour. Returns whether the setting was applied.
    """
    if megabytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, megabytes << 20))


class FastDropout(nn.Module):
    """Inverted dropout whose mask comes from `rand >= p`: the same distribution as nn.Dropout, ~2x
    cheaper to draw on CPU than its Bernoulli sampler (14% of a LoRA step on SmolLM2 at dropout 0.05)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        drop = torch.rand_like(x) < self.p  # bool: 1 byte per element kept for backward (nn.Dropout keeps 4)
        return x.masked_fill(drop, 0.0).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Swap the LoRA layers' nn.Dropout for FastDropout (no weights, so the adapter is unchanged); the count."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, layer in list(dropouts.items()):
            if type(layer) is nn.Dropout and layer.p > 0:
                dropouts[name] = FastDropout(layer.p)
                swapped += 1
    return swapped
