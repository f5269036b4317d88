"""A tiny remote-code model of our own, written as files with `auto_map` (loaded with trust_remote_code).

    from remote_model import write_remote_model
    write_remote_model(folder, vocab_size=600)                    # trains, but its generate() is broken
    write_remote_model(folder, vocab_size=600, broken_cache=True)  # its rotary cache comes back NaN

It mimics what transformers-4 era remote code (ChatGLM2, Baichuan) does under transformers 5: a fused
`query_key_value` projection, a rotary cos/sin cache kept in a non-persistent buffer, and a `generate`
that calls the removed `_extract_past_from_model_output`. With `broken_cache` the buffer is filled with
NaN at load (a cache that was never rebuilt), which makes every loss NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_CODE = """
from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny_remote"

    def __init__(self, vocab_size=600, hidden_size=32, num_layers=2, num_heads=4, broken_cache=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.broken_cache = broken_cache
        super().__init__(**kwargs)
"""

MODELING_CODE = """
import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_tiny_remote import TinyRemoteConfig


class Rotary(nn.Module):
    def __init__(self, dim, broken):
        super().__init__()
        self.dim, self.broken = dim, broken
        if broken:  # a cache that was never rebuilt: saved with the weights, so it reloads as NaN every time
            nan = torch.full((256, dim // 2), float("nan"))
            self.register_buffer("cos_cached", nan, persistent=True)
            self.register_buffer("sin_cached", nan.clone(), persistent=True)

    def forward(self, x):  # (batch, heads, seq, dim)
        n = x.shape[2]
        if self.broken:
            cos, sin = self.cos_cached[:n], self.sin_cached[:n]
        else:
            inv = 1.0 / (10000 ** (torch.arange(0, self.dim, 2, device=x.device).float() / self.dim))
            angles = torch.outer(torch.arange(n, device=x.device).float(), inv)  # (seq, dim / 2)
            cos, sin = angles.cos(), angles.sin()
        a, b = x[..., ::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_heads
        self.input_layernorm = nn.LayerNorm(h)
        self.query_key_value = nn.Linear(h, 3 * h)
        self.dense = nn.Linear(h, h)
        self.post_attention_layernorm = nn.LayerNorm(h)
        self.dense_h_to_4h = nn.Linear(h, 4 * h)
        self.dense_4h_to_h = nn.Linear(4 * h, h)
        self.rotary = Rotary(h // config.num_heads, config.broken_cache)

    def forward(self, x):
        b, n, h = x.shape
        q, k, v = self.query_key_value(self.input_layernorm(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(self.rotary(q), self.rotary(k), v, is_causal=True)
        x = x + self.dense(y.transpose(1, 2).reshape(b, n, h))
        return x + self.dense_4h_to_h(nn.functional.gelu(self.dense_h_to_4h(self.post_attention_layernorm(x))))


class TinyRemoteForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TinyRemoteConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]

    def __init__(self, config):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size)
        self.output_layer = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.word_embeddings

    def get_output_embeddings(self):
        return self.output_layer

    def forward(self, input_ids=None, attention_mask=None, labels=None, position_ids=None, **kwargs):
        x = self.word_embeddings(input_ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.output_layer(self.final_layernorm(x))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}

    def generate(self, *args, **kwargs):
        # written for transformers 4, as ChatGLM2's is: this helper no longer exists in transformers 5
        return self._extract_past_from_model_output(None)
"""


def write_remote_model(
    folder: Path, vocab_size: int = 600, broken_cache: bool = False, seed: int = 0
) -> Path:
    """Write the code files and a config with `auto_map`, then random weights, into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny_remote.py").write_text(CONFIG_CODE, encoding="utf-8")
    (folder / "modeling_tiny_remote.py").write_text(MODELING_CODE, encoding="utf-8")
    config = {
        "model_type": "tiny_remote", "architectures": ["TinyRemoteForCausalLM"], "vocab_size": vocab_size,
        "hidden_size": 32, "num_layers": 2, "num_heads": 4, "broken_cache": broken_cache,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "auto_map": {"AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
                     "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteForCausalLM"},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(folder, trust_remote_code=True), trust_remote_code=True
    )
    model.save_pretrained(folder)
    return folder
