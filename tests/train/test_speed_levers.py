"""Speed levers never change the maths: on a fixed batch, the loss and the LoRA gradients through
padding-free packing, lean logits, the lean MLP and gradient checkpointing equal the plain padded path's
(relative tolerance 1e-5, fp32), and training with the levers logs the same losses as without."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import llm_tuning.train.sft as sft
from llm_tuning.config import ConfigError
from llm_tuning.data.collate import PadCollator
from llm_tuning.data.encode import IGNORE_INDEX
from llm_tuning.data.packing import PackedCollator
from llm_tuning.train.lean_mlp import plain_mlp, use_lean_mlp
from llm_tuning.train.loss import lean_forward, next_token_targets, token_loss
from llm_tuning.train.packed_attention import use_packed_attention
from llm_tuning.train.sft import TrainConfig
from llm_tuning.train.speed import FastDropout, check_levers, use_fast_dropout

RTOL = 1e-5

# (row length, prompt length): varied lengths so the padded batch has plenty of padding
SHAPES = [(9, 4), (23, 10), (5, 0), (31, 20)]  # (5, 0): a row trained from its first token


def fixed_rows(vocab: int) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    rows = []
    for length, prompt in SHAPES:
        ids = torch.randint(3, vocab, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return rows


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    """The tiny Llama with a LoRA adapter whose B is non-zero (so LoRA changes the outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj",
                                                                                                   "down_proj"]))  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def loss_and_grads(
    model,
    rows,
    packing: bool,
    lean: bool,
    checkpointing: bool = False,
    rows_attn: bool = False,
    lean_mlp: bool = False,
):
    """(loss, {name: grad}) of one forward/backward of `rows` through the chosen path."""
    model.train()
    model.zero_grad()
    model.set_attn_implementation("sdpa")
    if rows_attn:
        assert use_packed_attention(model)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lean_mlp:
        assert use_lean_mlp(model) == 2  # one per layer
    batch = (PackedCollator() if packing else PadCollator(0))(rows)
    num_items = sum(int((torch.tensor(r["labels"][1:]) != IGNORE_INDEX).sum()) for r in rows)
    if lean:
        loss = lean_forward(model, batch, num_items)[0]
    else:
        loss = model(**batch, num_items_in_batch=num_items).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    if checkpointing:
        model.activation_checkpointing_disable()
    plain_mlp(model)
    model.set_attn_implementation("sdpa")
    return loss.item(), grads


def assert_close(a: tuple, b: tuple) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=RTOL)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = grads_b[name].abs().max().item()
        assert (grads_a[name] - grads_b[name]).abs().max().item() <= RTOL * scale + 1e-8, name


LEVERS = {  # id: (packing, lean logits, gradient checkpointing, row-by-row packed attention, lean MLP)
    "packing, block mask": (True, False, False, False, False),
    "packing, row attention": (True, False, False, True, False),
    "lean_logits": (False, True, False, False, False),
    "lean_mlp": (False, False, False, False, True),
    "packing+lean logits+lean MLP": (True, True, False, True, True),
    "checkpointing": (False, False, True, False, False),
    "all": (True, True, True, True, True),
}


@pytest.mark.parametrize("lever", LEVERS)
def test_lever_matches_plain_padded_loss_and_gradients(lora_model, lever):
    rows = fixed_rows(lora_model.config.vocab_size)
    reference = loss_and_grads(lora_model, rows, packing=False, lean=False)
    assert reference[0] > 0
    assert_close(loss_and_grads(lora_model, rows, *LEVERS[lever]), reference)


def test_row_attention_falls_back_to_sdpa_without_boundaries(lora_model):
    """A padded batch (no cu_seq_lens) through the row-by-row attention is the plain SDPA result."""
    rows = fixed_rows(lora_model.config.vocab_size)
    reference = loss_and_grads(lora_model, rows, packing=False, lean=False)
    assert_close(loss_and_grads(lora_model, rows, packing=False, lean=True, rows_attn=True), reference)


def test_packed_attention_is_not_used_for_other_implementations(tiny_model):
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="eager")
    assert not use_packed_attention(eager) and eager.config._attn_implementation == "eager"


def test_packed_collator_restarts_positions_and_masks_row_starts():
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = PackedCollator()(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # 7 never learns to predict 8
    assert "attention_mask" not in batch
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5] and batch["max_length_q"] == 3


def test_lean_loss_is_cross_entropy_over_trained_positions():
    labels = torch.tensor([[-100, 4, 5, -100], [-100, -100, 6, 7]])
    targets = next_token_targets(labels)
    assert targets.tolist() == [[4, 5, -100, -100], [-100, 6, 7, -100]]
    logits = torch.zeros(4, 10)  # uniform: every token costs ln(10)
    loss = token_loss(logits, targets[targets != -100], num_items=None)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(10.0)).item())
    assert token_loss(logits, targets[targets != -100], num_items=8).item() == pytest.approx(loss.item() / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_matches_torch(monkeypatch, dtype):
    import llm_tuning.train.loss as loss_module

    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 3 * 50)  # chunks of 3 rows: 7 rows take 3 chunks
    torch.manual_seed(0)
    logits = (torch.randn(7, 50) * 3).to(dtype).requires_grad_()
    targets = torch.tensor([4, -100, 49, 0, 7, -100, 12])
    ours = token_loss(logits, targets, num_items=None)
    (grad,) = torch.autograd.grad(ours, logits)
    reference_logits = logits.detach().float().requires_grad_()
    reference = torch.nn.functional.cross_entropy(reference_logits, targets, ignore_index=-100)
    reference.backward()
    assert ours.dtype == torch.float32 and ours.item() == pytest.approx(reference.item(), rel=1e-6)
    assert grad.dtype == dtype and not grad[1].any() and not grad[5].any()  # ignored rows get no gradient
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert torch.allclose(grad.float(), reference_logits.grad, atol=tol)


def test_chunked_cross_entropy_of_no_trained_tokens_is_zero():
    logits = torch.zeros(0, 50, requires_grad=True)  # a batch whose every answer was cut off
    loss = token_loss(logits, torch.zeros(0, dtype=torch.long), num_items=None)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == (0, 50)


def test_check_levers_keeps_levers_that_agree(lora_model):
    levers = check_levers(lora_model, packing=True, lean_logits=True, lean_mlp=True)
    assert levers.packing and levers.lean_logits and levers.lean_mlp
    assert lora_model.training  # put back in training mode
    plain_mlp(lora_model)


def test_check_levers_switches_the_lean_mlp_back_off_when_the_loss_differs(lora_model, monkeypatch, caplog):
    import llm_tuning.train.lean_mlp as lean_mlp

    monkeypatch.setattr(lean_mlp.GatedProduct, "forward", staticmethod(lambda ctx, gate, up, act: gate * up))
    levers = check_levers(lora_model, packing=False, lean_logits=False, lean_mlp=True)
    assert not levers.lean_mlp and "--lean_mlp switched off" in caplog.text
    assert not any("forward" in vars(m) for m in lora_model.modules())  # the plain MLP forward is back


def test_check_levers_switches_off_packing_for_a_model_that_ignores_positions(
    lora_model, monkeypatch, caplog
):
    forward = lora_model.forward

    def ignore_positions(*args, position_ids=None, **kwargs):  # as a model with its own code might
        return forward(*args, **kwargs)

    monkeypatch.setattr(lora_model, "forward", ignore_positions)
    levers = check_levers(lora_model, packing=True, lean_logits=True)
    assert not levers.packing and levers.lean_logits
    assert "--packing switched off" in caplog.text


def train_losses(tiny_model: str, data: Path, out: Path, **levers) -> list[float]:
    cfg = TrainConfig(model=tiny_model, data=str(data), prompt_key="q", target_key="a", output_dir=str(out),
                      max_steps=4, per_device_train_batch_size=3, learning_rate=1e-2, lr_scheduler_type="constant",
                      warmup_steps=0, lora_dropout=0.0, logging_steps=1, save_steps=1000, report_to="none",
                      device="cpu", **levers)  # fmt: skip
    return [r["loss"] for r in sft.run(cfg).log if "loss" in r]


def test_training_with_levers_logs_the_same_losses(tiny_model, tmp_path):
    rows = [{"q": "What is " + " + ".join(["7"] * n) + "?", "a": f"{7 * n}"} for n in (1, 6, 2, 9, 3, 12)]
    data = tmp_path / "varied.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plain = train_losses(
        tiny_model, data, tmp_path / "plain", packing=False, lean_logits=False, lean_mlp=False
    )
    fast = train_losses(tiny_model, data, tmp_path / "fast", packing=True, lean_logits=True, lean_mlp=True)
    assert len(plain) == len(fast) == 4
    assert fast == pytest.approx(plain, rel=1e-4)  # 4 Adam steps of float rounding apart


def test_qlora_is_refused_without_a_gpu_or_bitsandbytes(tiny_model, qa_file, tmp_path, monkeypatch):
    cfg = TrainConfig(model=tiny_model, data=str(qa_file), output_dir=str(tmp_path / "q"), load_in_4bit=True,
                      report_to="none")  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--load_in_4bit needs a CUDA GPU"):
        sft.run(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "bitsandbytes" else object()
    )
    with pytest.raises(ConfigError, match="needs bitsandbytes"):
        sft.run(TrainConfig(**{**cfg.__dict__, "device": "cuda"}))


def test_bad_lever_flags():
    with pytest.raises(ConfigError, match="--torch_threads"):
        TrainConfig(data="a.jsonl", torch_threads=-1)


def test_fast_dropout_has_dropout_statistics_and_gradient():
    torch.manual_seed(0)
    drop = FastDropout(0.25)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    zeros = (y == 0).float().mean().item()
    assert zeros == pytest.approx(0.25, abs=0.01)
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.75)))  # kept values scaled by 1 / (1 - p)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum)/dx is the same mask and scale
    drop.eval()
    assert torch.equal(drop(x), x)


def test_use_fast_dropout_swaps_only_lora_dropouts(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))  # fmt: skip
    before = model.state_dict().keys()
    assert use_fast_dropout(model) == 4  # 2 layers x 2 projections
    assert all(
        isinstance(m, FastDropout) and m.p == 0.1
        for m in model.modules()
        if type(m).__name__ == "FastDropout"
    )
    assert not any(type(m) is torch.nn.Dropout and m.p == 0.1 for m in model.modules())
    assert model.state_dict().keys() == before  # the adapter's layout is unchanged


@pytest.mark.parametrize("window", [4, 64], ids=["rows longer than the window", "rows within the window"])
def test_row_attention_with_a_sliding_window(window):
    """Mistral-style sliding-window attention: packed rows attend as the padded rows do."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("mistral", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=100,
                                  sliding_window=window, use_cache=False)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    rows = fixed_rows(100)
    with torch.no_grad():
        reference = model(**PadCollator(0)(rows)).loss.item()
        assert use_packed_attention(model)
        packed = model(**PackedCollator()(rows)).loss.item()
    assert packed == pytest.approx(reference, rel=RTOL)


def test_mmap_threshold_applies_on_linux_glibc_only_when_asked():
    import platform
    import sys

    from llm_tuning.train.speed import set_mmap_threshold

    assert set_mmap_threshold(0) is False
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert set_mmap_threshold(64) is glibc  # 64 MiB: larger than any tensor of the other tests


@pytest.mark.parametrize("user_value", [None, "0"], ids=["default", "set by the user"])
def test_importing_llm_tuning_turns_on_huge_page_allocations_unless_the_user_chose(user_value):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if user_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = user_value
    code = "import llm_tuning, os; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (user_value or "1")


def test_the_lean_mlp_stays_off_when_activations_are_recomputed(monkeypatch):
    monkeypatch.delenv("FSDP_ACTIVATION_CHECKPOINTING", raising=False)
    assert not sft.checkpointing(TrainConfig(data="a.jsonl"))
    assert sft.checkpointing(TrainConfig(data="a.jsonl", gradient_checkpointing=True))
    monkeypatch.setenv(
        "FSDP_ACTIVATION_CHECKPOINTING", "true"
    )  # as `accelerate launch` sets it from a config
    assert sft.checkpointing(TrainConfig(data="a.jsonl"))
