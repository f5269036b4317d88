"""`llm-tuning export` on tiny llama / qwen2 / mistral models: the GGUF reloads with transformers' GGUF reader and
computes what the merged model computes; tokenizer, Modelfile and GGUF LoRA checked; bad flags exit 2."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import CHATML_WITH_SYSTEM

from llm_tuning.cli import main
from llm_tuning.config import ConfigError
from llm_tuning.infer.export import ExportConfig, run
from llm_tuning.models import gguf_export
from llm_tuning.models.adapters import apply_adapters, parse_adapter_spec

INPUT = torch.tensor([[1, 5, 40, 77, 120, 9, 33, 250]])
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Largest |logit difference| allowed, relative to the largest |logit| of the merged model: f16 rounds weights
# to 11 bits, q8_0 to 8 bits per 32-weight block; f32 must be exact up to float summation order.
TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "q8_0": 5e-2}


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def tiny(request, tmp_path_factory):
    """(base folder, adapter folder) of a tiny random model of each exportable architecture."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    tokenizer = tiny_models.build_tokenizer(root / "base")
    if request.param == "qwen2":  # Qwen2's template adds a default system prompt; and its embeddings are tied
        tokenizer.chat_template = CHATML_WITH_SYSTEM
        tokenizer.save_pretrained(root / "base")
    sizes = {"tie_word_embeddings": True} if request.param == "qwen2" else {}
    tiny_models.build_model(root / "base", request.param, vocab_size=len(tokenizer), **sizes)
    adapter = tiny_models.random_adapter(str(root / "base"), root / "adapter", 4, TARGETS, seed=3)
    return request.param, str(root / "base"), adapter


def merged_logits(base: str, flags: list[str]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if flags:
        model = apply_adapters(model, [parse_adapter_spec(f) for f in flags]).merge_and_unload()
    with torch.no_grad():
        return model(INPUT).logits


def reload(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_gguf_reloads_with_the_merged_models_logits(tiny, outtype, tmp_path):
    arch, base, adapter = tiny
    out = tmp_path / "out" / "model.gguf"
    result = run(ExportConfig(model=base, adapter=[adapter], output=str(out), outtype=outtype))
    assert (
        result.files == [out] and out.is_file() and [p.name for p in out.parent.iterdir()] == ["model.gguf"]
    )
    model, _ = reload(out)
    expected = merged_logits(base, [adapter])
    with torch.no_grad():
        error = (model(INPUT).logits - expected).abs().max() / expected.abs().max()
    assert error <= TOLERANCE[outtype], f"{outtype}: relative logit error {error:.2e}"
    if outtype != "f32":  # the file really holds the smaller type
        assert {"f16": "F16", "q8_0": "Q8_0"}[outtype] in result.tensor_types
    assert not torch.allclose(expected, merged_logits(base, []), atol=1e-3)  # the adapter is in there


def test_tokenizer_and_chat_template_round_trip(tiny, tmp_path):
    from transformers import AutoTokenizer

    arch, base, adapter = tiny
    out = tmp_path / "model.gguf"
    run(ExportConfig(model=base, adapter=[adapter], output=str(out), outtype="f32"))
    original = AutoTokenizer.from_pretrained(base)
    _, loaded = reload(out)
    for text in [
        "What is 12 + 7? 12 + 7 = 19.",
        "<|im_start|>user\nhello world<|im_end|>\n",
        "  the lazy dog  0123",
    ]:
        assert loaded(text).input_ids == original(text).input_ids, text
    assert loaded.chat_template == original.chat_template
    assert (loaded.eos_token, loaded.bos_token) == (original.eos_token, original.bos_token)


def test_llama_q_and_k_rows_are_stored_in_llama_cpps_rope_order(tiny, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, base, adapter = tiny
    config = AutoConfig.from_pretrained(base)
    out = tmp_path / "model.gguf"
    run(ExportConfig(model=base, adapter=[adapter], output=str(out), outtype="f32"))
    stored = {t.name: np.asarray(t.data) for t in GGUFReader(out).tensors}
    merged = apply_adapters(
        AutoModelForCausalLM.from_pretrained(base), [parse_adapter_spec(adapter)]
    ).merge_and_unload()
    q = merged.model.layers[1].self_attn.q_proj.weight.detach().numpy()
    permuted = gguf_export.permute_rows(q, config.num_attention_heads)
    assert not np.array_equal(permuted, q)
    expected = permuted if arch in ("llama", "mistral") else q  # qwen2 uses NEOX rope: no permutation
    np.testing.assert_array_equal(stored["blk.1.attn_q.weight"], expected)
    assert ("output.weight" in stored) == (not config.tie_word_embeddings)
    assert stored["blk.0.attn_norm.weight"].dtype == np.float32


def test_ollama_modelfile(tiny, tmp_path):
    arch, base, adapter = tiny
    out = tmp_path / "out" / "m.gguf"
    result = run(
        ExportConfig(model=base, adapter=[adapter], output=str(out), format="ollama", outtype="q8_0")
    )
    text = (out.parent / "Modelfile").read_text()
    assert result.template == "chatml" and result.files == [out, out.parent / "Modelfile"]
    assert "FROM ./m.gguf\n" in text and 'TEMPLATE """' in text and "<|im_start|>assistant" in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert ('SYSTEM """You are a helpful assistant."""' in text) == (
        arch == "qwen2"
    )  # its template's default
    assert sorted(p.name for p in out.parent.iterdir()) == ["Modelfile", "m.gguf"]


def lora_pairs(path) -> tuple[dict, dict[str, np.ndarray]]:
    from gguf import GGUFReader, dequantize

    reader = GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return fields, {
        t.name: dequantize(t.data, t.tensor_type).reshape(t.data.shape[0], -1) for t in reader.tensors
    }


def weight_deltas(base: str, flags: list[str]) -> dict[str, np.ndarray]:
    """GGUF weight name -> merged minus base weight, for the layers the adapter changes."""
    from transformers import AutoModelForCausalLM

    before = dict(AutoModelForCausalLM.from_pretrained(base).named_parameters())
    merged = apply_adapters(
        AutoModelForCausalLM.from_pretrained(base), [parse_adapter_spec(f) for f in flags]
    )
    names = gguf_export.tensor_name_map(
        gguf_export.ARCHS[merged.config.model_type], merged.config.num_hidden_layers
    )
    deltas = {}
    for name, weight in merged.merge_and_unload().named_parameters():
        delta = (weight - before[name]).detach().numpy()
        if np.abs(delta).max() > 0:
            deltas[gguf_export.gguf_tensor_name(names, name)] = delta
    return deltas


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_gguf_lora_holds_the_adapters_update_in_llama_cpps_layout(tiny, outtype, tmp_path):
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    arch, base, adapter = tiny
    config = AutoConfig.from_pretrained(base)
    out = tmp_path / "out" / "lora.gguf"
    run(ExportConfig(model=base, adapter=[adapter], output=str(out), format="gguf-lora", outtype=outtype))
    fields, tensors = lora_pairs(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == ("qwen2" if arch == "qwen2" else "llama")
    alpha = fields["adapter.lora.alpha"]
    assert alpha == 8  # the adapter's lora_alpha (2 x rank 4): no folding needed
    deltas = weight_deltas(base, [adapter])
    assert set(tensors) == {f"{n}.lora_{ab}" for n in deltas for ab in "ab"}
    unpermute = LlamaTensorProcessor({"num_attention_heads": config.num_attention_heads,
                                      "num_key_value_heads": config.num_key_value_heads})  # fmt: skip
    for name, delta in deltas.items():
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        assert a.shape == (4, delta.shape[1]) and b.shape == (delta.shape[0], 4)  # (r, in), (out, r)
        update = alpha / a.shape[0] * b @ a  # what llama.cpp adds: alpha / r * B A
        if arch != "qwen2":
            update = unpermute.process(update, name).weights
        np.testing.assert_allclose(update, delta, atol=2e-2 if outtype == "q8_0" else 1e-5, rtol=0.1)


def test_gguf_lora_folds_per_module_scaling_into_b(tiny_model, tmp_path):
    """rsLoRA with a rank pattern gives each module its own alpha / sqrt(r): one file alpha must still fit."""
    base = tiny_model
    adapter = tiny_models.random_adapter(base, tmp_path / "rs", 4, ("q_proj", "k_proj"), seed=5,
                                         use_rslora=True, rank_pattern={"k_proj": 2})  # fmt: skip
    out = tmp_path / "out" / "lora.gguf"
    run(ExportConfig(model=base, adapter=[adapter], output=str(out), format="gguf-lora", outtype="f32"))
    fields, tensors = lora_pairs(out)
    alpha = fields["adapter.lora.alpha"]
    for name, delta in weight_deltas(base, [adapter]).items():
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        update = alpha / a.shape[0] * b @ a
        # the permutation only reorders rows: compare the sorted magnitudes of each update
        np.testing.assert_allclose(
            np.sort(np.abs(update), axis=None), np.sort(np.abs(delta), axis=None), atol=1e-5
        )


def test_bad_flags_exit_2_with_one_line(tiny_model, tmp_path, capsys):
    adapter = tiny_models.random_adapter(tiny_model, tmp_path / "ad", 2, ("q_proj",), seed=1)
    existing = tmp_path / "old.gguf"
    existing.write_bytes(b"the user's file")
    capsys.readouterr()
    cases = {
        ("--output", str(existing)): "--overwrite",
        ("--output", str(tmp_path)): "is a folder",
        ("--output", str(tmp_path / "x.bin")): "must end in .gguf",
        ("--output", str(tmp_path / "x.gguf"), "--format", "onnx"): "gguf, ollama, gguf-lora",
        ("--output", str(tmp_path / "x.gguf"), "--outtype", "q4_k"): "f16, q8_0, f32",
    }
    for flags, message in cases.items():
        assert main(["export", "--model", tiny_model, "--adapter", adapter, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert existing.read_bytes() == b"the user's file"
    (tmp_path / "Modelfile").write_text("FROM mine\n")
    flags = ["--output", str(tmp_path / "new.gguf"), "--format", "ollama"]
    assert main(["export", "--model", tiny_model, "--adapter", adapter, *flags]) == 2
    assert "Modelfile exists" in capsys.readouterr().err and not (tmp_path / "new.gguf").exists()


def test_unsupported_architecture_is_named(tmp_path, capsys):
    tokenizer = tiny_models.build_tokenizer(tmp_path / "gpt2")
    tiny_models.build_model(tmp_path / "gpt2", "gpt2", vocab_size=len(tokenizer))
    adapter = tiny_models.random_adapter(str(tmp_path / "gpt2"), tmp_path / "ad", 2, ("c_attn",), seed=1)
    capsys.readouterr()
    argv = [
        "export",
        "--model",
        str(tmp_path / "gpt2"),
        "--adapter",
        adapter,
        "--output",
        str(tmp_path / "m.gguf"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'gpt2'" in err and "llama, mistral, qwen2" in err and not (tmp_path / "m.gguf").exists()


def test_an_interrupted_export_leaves_the_old_file_and_no_partial_one(tiny_model, tmp_path, monkeypatch):
    from gguf import GGUFWriter

    adapter = tiny_models.random_adapter(tiny_model, tmp_path / "ad", 2, ("q_proj",), seed=1)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    out.write_bytes(b"previous export")

    def killed(self, **kwargs):
        self.fout[0].write(b"half a tensor")
        raise KeyboardInterrupt

    monkeypatch.setattr(GGUFWriter, "write_tensors_to_file", killed)
    with pytest.raises(KeyboardInterrupt):
        run(ExportConfig(model=tiny_model, adapter=[adapter], output=str(out), overwrite=True))
    assert out.read_bytes() == b"previous export" and [p.name for p in out.parent.iterdir()] == ["m.gguf"]
    monkeypatch.undo()
    assert (
        main(["export", "--model", tiny_model, "--adapter", adapter, "--output", str(out), "--overwrite"])
        == 0
    )
    assert out.read_bytes()[:4] == b"GGUF"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not the temp file's 0600


def test_cli_exports_a_weighted_mix(tiny_model, tmp_path, capsys):
    math = tiny_models.random_adapter(tiny_model, tmp_path / "math", 4, ("q_proj", "v_proj"), seed=1)
    style = tiny_models.random_adapter(tiny_model, tmp_path / "style", 2, ("k_proj", "o_proj"), seed=2)
    flags = [f"math={math}:0.7", f"style={style}:0.3"]
    out = tmp_path / "mix.gguf"
    argv = ["export", "--model", tiny_model, "--adapter", flags[0], "--adapter", flags[1], "--method", "cat"]
    assert main([*argv, "--output", str(out), "--outtype", "f32"]) == 0
    assert "math x 0.7, style x 0.3" in capsys.readouterr().out
    model, _ = reload(out)
    from transformers import AutoModelForCausalLM

    mixed = apply_adapters(
        AutoModelForCausalLM.from_pretrained(tiny_model), [parse_adapter_spec(f) for f in flags], "cat"
    )
    with torch.no_grad():
        torch.testing.assert_close(model(INPUT).logits, mixed.eval()(INPUT).logits, atol=1e-4, rtol=1e-4)


LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "style"),
    [(tiny_models.CHATML, "chatml"), (LLAMA2, "llama2"), ("{{ messages[0]['content'] }}", "none")],
)
def test_modelfile_template_translation(tiny_model, template, style):
    from transformers import AutoTokenizer

    from llm_tuning.infer.ollama import modelfile_text

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = template
    text, found = modelfile_text("m.gguf", tokenizer, "test")
    assert found == style
    assert any(line.startswith("TEMPLATE ") for line in text.splitlines()) == (style != "none")
    if style == "llama2":
        assert "[INST] {{ if and $first $.System }}<<SYS>>" in text and 'PARAMETER stop "[INST]"' in text
    if style == "none":
        assert "# No TEMPLATE" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "SYSTEM" not in text  # none of these templates adds a default system prompt


def test_a_tokenizer_that_adds_bos_says_so_in_the_file(tmp_path):
    """llama.cpp's default for adding BOS depends on the pre-tokenizer (on for Llama 3): the flag is always written."""
    from gguf import GGUFReader
    from tokenizers import processors

    tokenizer = tiny_models.build_tokenizer(tmp_path / "base")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)]
    )
    tokenizer.save_pretrained(tmp_path / "base")
    # 8 embedding rows more than tokens, as Qwen2 pads its vocabulary: llama.cpp needs a token per row
    tiny_models.build_model(tmp_path / "base", "llama", vocab_size=len(tokenizer) + 8)
    adapter = tiny_models.random_adapter(str(tmp_path / "base"), tmp_path / "ad", 2, ("q_proj",), seed=1)
    out = tmp_path / "out" / "m.gguf"
    run(ExportConfig(model=str(tmp_path / "base"), adapter=[adapter], output=str(out)))
    fields = GGUFReader(out).fields
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert fields["tokenizer.ggml.add_eos_token"].contents() is False
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == len(tokenizer) + 8 and tokens[-1] == f"[PAD{len(tokenizer) + 7}]"
    assert fields["tokenizer.ggml.token_type"].contents()[-1] == 5  # UNUSED
    _, loaded = reload(out)
    assert loaded("hello").input_ids == tokenizer("hello").input_ids and loaded("hello").input_ids[0] == 1


def test_what_llama_cpp_would_compute_differently_is_refused_or_warned(caplog):
    from transformers import AutoConfig

    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}  # fmt: skip
    with pytest.raises(ConfigError, match="'llama3' rope scaling"):
        gguf_export.check_exportable(AutoConfig.for_model("llama", rope_scaling=llama3))
    with pytest.raises(ConfigError, match="'gpt2'.*supported: llama, mistral, qwen2"):
        gguf_export.check_exportable(AutoConfig.for_model("gpt2"))
    gguf_export.check_exportable(
        AutoConfig.for_model("mistral", sliding_window=64, max_position_embeddings=256)
    )
    assert "ignores the 64-token sliding window" in caplog.text
    caplog.clear()
    gguf_export.check_exportable(
        AutoConfig.for_model("qwen2", sliding_window=64, max_position_embeddings=256)
    )
    assert "sliding window" not in caplog.text  # Qwen2 has use_sliding_window off


def test_a_sentencepiece_style_tokenizer_is_refused_with_the_way_out():
    from tokenizers import Tokenizer, models, trainers
    from transformers import PreTrainedTokenizerFast

    spm = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    spm.train_from_iterator(tiny_models.CORPUS, trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>"]))
    with pytest.raises(ConfigError, match="BPE with byte fallback.*convert_hf_to_gguf.py"):
        gguf_export.check_tokenizer(PreTrainedTokenizerFast(tokenizer_object=spm))
