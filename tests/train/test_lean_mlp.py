"""The lean gated MLP: the same gradients as autograd's, half the intermediate activations kept, and only
modules whose forward is exactly the gated line are switched. (Loss and LoRA gradients through a whole
model, with and without the other levers: test_speed_levers.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

from llm_tuning.train.lean_mlp import GatedProduct, is_gated_mlp, plain_mlp, use_lean_mlp


@pytest.mark.parametrize("act", [nn.SiLU(), nn.GELU(approximate="tanh")], ids=["silu", "gelu_tanh"])
def test_gated_product_gradients_match_autograd(act):
    torch.manual_seed(0)
    gate = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, u: GatedProduct.apply(g, u, act), (gate, up))
    assert torch.equal(GatedProduct.apply(gate, up, act), act(gate) * up)


@pytest.fixture
def lora_llama(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, lora_dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"]))  # fmt: skip
    return model.train()


def products_alive(model, lean: bool) -> tuple[list[bool], float]:
    """Whether each layer's act(gate) * up is still in memory after the forward, and the loss."""
    products = []
    hooks = [
        m.down_proj.register_forward_pre_hook(lambda _m, args: products.append(StorageWeakRef(args[0].untyped_storage())))
        for m in model.modules()
        if is_gated_mlp(m)
    ]  # fmt: skip
    if lean:
        assert use_lean_mlp(model) == 2
    ids = torch.randint(3, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=ids, labels=ids).loss
    alive = [not ref.expired() for ref in products]
    loss.backward()
    for hook in hooks:
        hook.remove()
    plain_mlp(model)
    return alive, loss.item()


def test_the_product_is_not_kept_for_backward(lora_llama):
    plain_alive, plain_loss = products_alive(lora_llama, lean=False)
    lean_alive, lean_loss = products_alive(lora_llama, lean=True)
    assert plain_alive == [True, True]  # down_proj's LoRA keeps its input ...
    assert lean_alive == [False, False]  # ... which the lean MLP recomputes instead
    assert lean_loss == pytest.approx(plain_loss, rel=1e-6)


def test_only_the_gated_forward_is_switched(tiny_model):
    from transformers import AutoConfig, AutoModelForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(tiny_model)
    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_embd=16, n_layer=1, n_head=2))
    assert use_lean_mlp(gpt2) == 0  # c_fc / c_proj: not a gated MLP

    class ScaledMLP(type(llama.model.layers[0].mlp)):  # gate_proj, up_proj, down_proj, but other maths
        def forward(self, x):
            return 2 * self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    class ReturningMLP(type(llama.model.layers[0].mlp)):  # the same maths, written as one return
        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    llama.model.layers[0].mlp.__class__ = ScaledMLP
    llama.model.layers[1].mlp.__class__ = ReturningMLP
    assert use_lean_mlp(llama) == 1
    assert "forward" not in vars(llama.model.layers[0].mlp) and "forward" in vars(llama.model.layers[1].mlp)
    assert use_lean_mlp(llama) == 0  # already switched
    plain_mlp(llama)
    assert not any("forward" in vars(m) for m in llama.modules())


def test_no_grad_forward_is_the_plain_forward(lora_llama):
    ids = torch.randint(3, lora_llama.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = lora_llama(input_ids=ids).logits
        use_lean_mlp(lora_llama)
        lean = lora_llama(input_ids=ids).logits
    plain_mlp(lora_llama)
    assert torch.allclose(plain, lean, rtol=1e-6, atol=1e-6)
