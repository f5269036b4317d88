"""Tiny random models and an in-memory tokenizer, saved as Hugging Face folders (no hub, no download).

from tiny_models import build_model, build_tokenizer      (bench/benchlib.py uses them too)
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is 12 + 7? 12 + 7 = 19. What is 9 x 8? 9 x 8 = 72. The answer is 42.",
    "hello world, the quick brown fox jumps over the lazy dog 0123456789 + - x / = ?",
    "user assistant system You are a helpful assistant. Answer briefly.",
    "food drinks price hygiene service parking positive neutral negative unmentioned",
]


def build_tokenizer(folder: Path, corpus: list[str] | None = None, vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on `corpus` (default CORPUS) with ChatML special tokens and chat
    template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(corpus or CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")  # fmt: skip
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path, arch: str = "llama", vocab_size: int = 600, seed: int = 0, **sizes) -> Path:
    """A 2-layer random model of the given architecture, saved next to the tokenizer; `sizes` override the
    (non-GPT-2) config's small defaults."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, vocab_size=vocab_size)  # fmt: skip
    if arch == "gpt2":
        config = AutoConfig.for_model(
            "gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256, vocab_size=vocab_size
        )
    else:
        config = AutoConfig.for_model(arch, **{**small, **sizes})
    config.eos_token_id, config.pad_token_id, config.bos_token_id = 2, 0, 1
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


def random_adapter(
    base: str,
    folder,
    rank: int = 4,
    targets=("q_proj", "v_proj"),
    seed: int = 0,
    alpha: int | None = None,
    **kw,
) -> str:
    """A LoRA adapter whose A and B are both random, so it changes the model's output from the start."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=list(targets),
                        init_lora_weights=False, **kw)  # fmt: skip
    get_peft_model(model, config).save_pretrained(folder)
    return str(folder)


# ChatML whose template adds a default system turn (the `other_model` fixture's, and export's Modelfile tests)
CHATML_WITH_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}" + CHATML
)
