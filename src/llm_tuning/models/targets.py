"""What LoRA adapts in a model: linear projections by block kind, fused expert weights, routers, shared weights.

    from llm_tuning.models.targets import find_targets
    find_targets(model).kinds      # {'model.layers.0.self_attn.q_proj': 'attention', ...}

Rules, each for a reason measured on tiny configs of every transformers causal-LM architecture:
- a target is a module that IS a linear layer (nn.Linear and its subclasses such as Falcon's FalconLinear,
  GPT-2's Conv1D, quantized linears), matched by a pattern that cannot hit a container: short names such
  as `q_proj` only where they match exactly the chosen modules, otherwise a regex over full paths (a
  Linear inside a numbered list is named `0`, which as a short name would match whole decoder layers);
- mixtures of experts keep their experts as fused 3-D parameters in transformers 5: those go to PEFT's
  `target_parameters`; routers (`gate`, `router`, `wg`, `shared_expert_gate`) are left frozen unless
  asked for, since adapting them destabilises routing;
- never the LM head (the output embeddings, or a module named like one) or the embeddings;
- PEFT refuses `out_proj` / `conv1d` on its Mamba-type model types: those are left out there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from llm_tuning.config import ConfigError

ATTENTION, DENSE_MLP, EXPERTS, SHARED, ROUTER, OTHER = (
    "attention", "dense MLP", "experts", "shared experts", "router", "other layers",
)  # fmt: skip
LINEAR_CLASS_NAMES = {
    "Conv1D",
    "Linear4bit",
    "Linear8bitLt",
    "QuantLinear",
}  # linears not subclassing nn.Linear
HEAD_NAMES = {"lm_head", "embed_out", "output_layer", "score", "classifier", "v_head", "summary", "lm_heads"}
ROUTER_NAMES = {"gate", "router", "wg", "gating", "gate_network", "shared_expert_gate", "switch"}
# peft/tuners/tuners_utils.py `_check_lora_target_modules_mamba` (PEFT 0.21) refuses these names there
PEFT_MAMBA_TYPES = {"falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"}
PEFT_MAMBA_REFUSED = {"out_proj", "conv1d"}
ATTENTION_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "W_pack", "c_attn"}
MLP_NAMES = {"gate_proj", "up_proj", "down_proj", "gate_up_proj", "c_fc", "fc1", "fc2", "dense_h_to_4h",
             "dense_4h_to_h", "w1", "w2", "w3"}  # fmt: skip


@dataclass
class LoraTargets:
    modules: list[str] = field(default_factory=list)  # full paths of linear modules
    parameters: list[str] = field(default_factory=list)  # full paths of 3-D expert weights (module.param)
    kinds: dict[str, str] = field(default_factory=dict)  # path -> block kind, for every target
    skipped: dict[str, list[str]] = field(default_factory=dict)  # block kind -> paths left frozen
    skip_reasons: dict[str, str] = field(default_factory=dict)

    def short_names(self) -> list[str]:
        """The targets' last names (two parts when the last is a list index), sorted."""
        return sorted({_short(p) for p in [*self.modules, *self.parameters]})

    def skip(self, kind: str, path: str, reason: str) -> None:
        self.skipped.setdefault(kind, []).append(path)
        self.skip_reasons.setdefault(kind, reason)


def _short(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ in LINEAR_CLASS_NAMES


def is_expert_holder(name: str, module: nn.Module) -> bool:
    return "expert" in type(module).__name__.lower() or any("expert" in p for p in name.split("."))


def expert_parameters(model: nn.Module) -> dict[str, str]:
    """{'model.layers.0.mlp.experts.gate_up_proj': kind} for every fused 3-D expert weight."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) or not is_expert_holder(name, module):
            continue
        for pname, param in module.named_parameters(recurse=False):
            if param.ndim == 3:
                path = f"{name}.{pname}"
                found[path] = SHARED if "shared" in path else EXPERTS
    return found


def block_kind(path: str, moe: bool = True) -> str:
    """attention / dense MLP / experts / shared experts / router / other layers, from a module's path."""
    parts = path.split(".")
    if parts[-1] == "weight" and len(parts) > 1:  # a bare parameter (a router without a Linear): its module
        parts = parts[:-1]
    last = parts[-1]
    if moe and (last in ROUTER_NAMES or any("router" in p or p == "shared_expert_gate" for p in parts)):
        return ROUTER
    if any(p.startswith("shared_expert") or p in ("shared_mlp", "shared_experts") for p in parts):
        return SHARED
    if any(p == "experts" or p.startswith("expert_") for p in parts):
        return EXPERTS
    if last in ATTENTION_NAMES or any("attn" in p or "attention" in p for p in parts[:-1]):
        return ATTENTION
    if last in MLP_NAMES or any(k in p for p in parts[:-1] for k in ("mlp", "ffn", "feed_forward", "moe")):
        return DENSE_MLP
    return OTHER


def _head_ids(model: nn.Module) -> set[int]:
    heads = set()
    for getter in ("get_output_embeddings", "get_input_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            heads.add(id(module))
    return heads


def find_targets(model: nn.Module, on_router: bool = False) -> LoraTargets:
    """Every linear projection and fused expert weight LoRA should adapt by default (see module docstring)."""
    targets = LoraTargets()
    experts = expert_parameters(model)
    moe = bool(experts) or any(is_expert_holder(n, m) for n, m in model.named_modules())
    heads = _head_ids(model)
    mamba = getattr(getattr(model, "config", None), "model_type", None) in PEFT_MAMBA_TYPES
    for name, module in model.named_modules():
        if not is_linear(module):
            continue
        last = name.rsplit(".", 1)[-1]
        if id(module) in heads or any(p in HEAD_NAMES for p in name.split(".")):
            continue
        kind = block_kind(name, moe)
        if kind == ROUTER and not on_router:
            targets.skip(ROUTER, name, "adapting routers destabilises routing; --lora_on_router adapts them")
        elif mamba and last in PEFT_MAMBA_REFUSED:
            targets.skip(kind, name, "PEFT refuses out_proj/conv1d on Mamba-type models")
        else:
            targets.modules.append(name)
            targets.kinds[name] = kind
    for path, kind in experts.items():
        targets.parameters.append(path)
        targets.kinds[path] = kind
    if on_router:
        _add_parameter_routers(model, targets)
    return targets


def _add_parameter_routers(model: nn.Module, targets: LoraTargets) -> None:
    """Routers that hold a bare 2-D weight (not a Linear module) go through target_parameters."""
    for name, module in model.named_modules():
        if is_linear(module) or block_kind(name) != ROUTER:
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.ndim == 2:
            targets.parameters.append(f"{name}.weight")
            targets.kinds[f"{name}.weight"] = ROUTER


def targets_by_name(model: nn.Module, names: list[str]) -> LoraTargets:
    """The linear modules and expert weights a user named with --target_modules (short or dotted names)."""
    targets = LoraTargets()
    moe = bool(expert_parameters(model))
    linears = [n for n, m in model.named_modules() if is_linear(m)]
    params = [f"{n}.{p}" for n, m in model.named_modules() for p, w in m.named_parameters(recurse=False)
              if w.ndim == 3 and is_expert_holder(n, m)]  # fmt: skip
    missing = []
    for wanted in names:
        hits = [p for p in linears if p == wanted or p.endswith(f".{wanted}")]
        hit_params = [p for p in params if p == wanted or p.endswith(f".{wanted}")]
        if not hits and not hit_params:
            missing.append(wanted)
        for path in hits:
            targets.modules.append(path)
            targets.kinds[path] = block_kind(path, moe)
        for path in hit_params:
            targets.parameters.append(path)
            targets.kinds[path] = EXPERTS
    if missing:
        valid = find_targets(model).short_names()
        raise ConfigError(
            f"--target_modules {','.join(missing)} not found in {type(model).__name__}; "
            f"its linear layers are: {','.join(valid)}"
        )
    targets.modules = sorted(set(targets.modules))
    targets.parameters = sorted(set(targets.parameters))
    return targets


def module_target_spec(model: nn.Module, paths: list[str]) -> list[str] | str:
    """PEFT's `target_modules` for exactly these module paths: short names where they match exactly these
    (readable, and mixable with adapters of earlier versions), else a full-path regex with layer numbers
    generalised, else the escaped paths themselves."""
    wanted = set(paths)
    names = [n for n, _ in model.named_modules()]
    short = {p.rsplit(".", 1)[-1] for p in paths}
    if not any(s.isdigit() for s in short):
        hits = {n for n in names if any(n == s or n.endswith(f".{s}") for s in short)}
        if hits == wanted:
            return sorted(short)
    # layer numbers generalised; a numbered last part (ffn.0) kept, as its siblings may not be linear
    general = sorted({re.sub(r"(^|\\\.)\d+(?=\\\.)", r"\1\\d+", re.escape(p)) for p in paths})
    for pattern in ("|".join(general), "|".join(re.escape(p) for p in sorted(paths))):
        if {n for n in names if re.fullmatch(pattern, n)} == wanted:
            return pattern
    raise AssertionError("an exact path regex always matches its paths")  # pragma: no cover


def shared_weight_groups(model: nn.Module) -> list[list[str]]:
    """Groups of module paths that use one weight tensor, where at least one of them carries LoRA
    (Zamba's shared transformer block): merging would fold every layer's change into the one weight."""
    users: dict[int, list[str]] = {}
    adapted: set[int] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if name.endswith("base_layer") or ".base_layer." in name:
            continue
        base = getattr(module, "base_layer", None)
        weight = getattr(base if base is not None else module, "weight", None)
        if not isinstance(weight, nn.Parameter) or not (is_linear(module) or base is not None):
            continue
        users.setdefault(id(weight), []).append(name)
        if hasattr(module, "lora_A") and len(module.lora_A):
            adapted.add(id(weight))
    return [sorted(paths) for key, paths in users.items() if key in adapted and len(paths) > 1]
