"""Linear layers over a few rows, computed as W @ x^T on the CPU: the batch engine's decode steps.

    with rows_first(linears_on_cpu(model)):
        model(input_ids=next_tokens, ...)       # (batch, 1): a few rows through every projection

A decode step multiplies a handful of rows by every weight matrix. On the CPU, `F.linear` (x @ W^T) over
8 rows took 2.4x as long as over one row (SmolLM2-135M's projections, 2 cores), while the same product
written `W @ x^T` (the few rows on the small side of the matrix multiply) took 1.6x: a decode step of 8 rows
about 15% faster (bench/README.md). Results equal F.linear's up to float rounding, as any change of batch
shape does. Inputs of more rows (prefill, training) and tensors off the CPU keep F.linear.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

FEW_ROWS = 32  # up to this many rows (tokens in the forward) take the W @ x^T path


def _few_rows_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cpu" or x.dim() == 0 or x.numel() // x.shape[-1] > FEW_ROWS:
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(-1, x.shape[-1])
    out = torch.mm(self.weight, flat.t()).t().contiguous()  # (rows, out_features)
    if self.bias is not None:
        out += self.bias
    return out.view(*x.shape[:-1], out.shape[-1])


def linears_on_cpu(model: Any) -> list[torch.nn.Linear]:
    """The model's plain nn.Linear layers whose weights are on the CPU: not quantized subclasses, nor layers
    whose forward something else already wraps (accelerate's offload hooks)."""
    return [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear and m.weight.device.type == "cpu" and "forward" not in m.__dict__
    ]


@contextmanager
def rows_first(linears: list[torch.nn.Linear]) -> Iterator[None]:
    """While in it, these layers compute inputs of at most FEW_ROWS rows as W @ x^T."""
    for layer in linears:
        layer.forward = types.MethodType(_few_rows_forward, layer)
    try:
        yield
    finally:
        for layer in linears:
            layer.__dict__.pop("forward", None)
