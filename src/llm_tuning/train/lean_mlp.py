"""Gated MLPs that keep two of their four activations for the backward pass (`--lean_mlp`).

    llm-tuning train --data train.jsonl --lean_mlp true       # the default

A gated MLP (Llama, Qwen, Mistral, Gemma, SmolLM, ...) computes `down(act(gate(x)) * up(x))`, and autograd
keeps four (tokens, intermediate) tensors of every layer until the backward: gate(x) for act, act(gate(x))
and up(x) for the product, and the product itself for the LoRA of `down`. On SmolLM2-135M that is 55% of
all the activations a training step keeps. Here the product is one autograd function that keeps gate(x)
and up(x) only and recomputes act in the backward, and the product that `down`'s LoRA keeps is recomputed
from those two when the backward needs it (a saved-tensor hook). Two of the four remain; what is
recomputed is elementwise, no matmul. The gradients are the same maths (tests/train/test_lean_mlp.py).

Only modules whose forward is exactly that line are switched, and `train` compares the loss with and
without before training (train/speed.py). Not combined with gradient checkpointing, which recomputes the
whole block anyway.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from typing import Any

import torch
from torch import nn

GATED_LINE = "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))"
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class GatedProduct(torch.autograd.Function):
    """act(gate) * up, keeping gate and up (not act(gate)) for the backward."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, act: Any) -> torch.Tensor:
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return act(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        gate, up = ctx.saved_tensors
        with torch.enable_grad():
            leaf = gate.detach().requires_grad_()
            activated = ctx.act(leaf)
        grad_gate = torch.autograd.grad(activated, leaf, grad * up)[0] if ctx.needs_input_grad[0] else None
        grad_up = grad * activated.detach() if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up, None


def _recompute_saved(product: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, act: Any) -> tuple:
    """Saved-tensor hooks that store a recipe instead of `product` (or a view of it) and redo it on use."""
    storage = product.untyped_storage().data_ptr()
    gate, up = gate.detach(), up.detach()  # the same memory, without a reference to the graph

    def pack(tensor: torch.Tensor) -> Any:
        if tensor.untyped_storage().data_ptr() != storage:
            return tensor
        return (tensor.shape, tensor.stride(), tensor.storage_offset())

    def unpack(saved: Any) -> torch.Tensor:
        if torch.is_tensor(saved):
            return saved
        with torch.no_grad():
            return (act(gate) * up).as_strided(*saved)

    return pack, unpack


def lean_gated_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    product = GatedProduct.apply(gate, up, self.act_fn)
    if not product.requires_grad or not product.is_contiguous() or product.storage_offset():
        return self.down_proj(product)
    with torch.autograd.graph.saved_tensors_hooks(*_recompute_saved(product, gate, up, self.act_fn)):
        return self.down_proj(product)


def computes_gated_line(function: Any) -> bool:
    """True if `function`'s body is `return GATED_LINE`, or `name = GATED_LINE; return name`."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    statements = tree.body[0].body
    if statements and isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
        statements = statements[1:]  # the docstring
    match statements:
        case [ast.Return(value=value)]:
            return value is not None and ast.unparse(value) == GATED_LINE
        case [ast.Assign(targets=[ast.Name(id=name)], value=value), ast.Return(value=ast.Name(id=returned))]:
            return name == returned and ast.unparse(value) == GATED_LINE
    return False


def is_gated_mlp(module: nn.Module) -> bool:
    """True for a module whose own forward is `down_proj(act_fn(gate_proj(x)) * up_proj(x))`."""
    if not all(isinstance(getattr(module, n, None), nn.Module) for n in PROJECTIONS):
        return False
    if not callable(getattr(module, "act_fn", None)) or "forward" in vars(module):
        return False
    return computes_gated_line(type(module).forward)


def use_lean_mlp(model: nn.Module) -> int:
    """Switch every gated MLP of `model` to the lean forward; how many were switched."""
    switched = 0
    for module in model.modules():
        if is_gated_mlp(module):
            module.forward = types.MethodType(lean_gated_forward, module)
            switched += 1
    return switched


def plain_mlp(model: nn.Module) -> None:
    """Undo `use_lean_mlp`."""
    for module in model.modules():
        if getattr(vars(module).get("forward"), "__func__", None) is lean_gated_forward:
            del module.forward
