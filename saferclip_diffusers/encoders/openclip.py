"""HF <-> OpenCLIP key mapping of a CLIP text tower (spec: modern-pipelines-uwm-des.md section 4.7).

OpenCLIP keeps q, k and v in one ``attn.in_proj_*`` tensor (concatenated in that order along dim 0), names
the MLP ``c_fc`` / ``c_proj``, stores the position embedding as a bare parameter and the projection as a matrix
``P`` used as ``x @ P``, i.e. the transpose of HF's ``nn.Linear`` weight. SDXL all-in-one checkpoints store
bigG this way under ``conditioner.embedders.1.model.``; SD 2.x stores OpenCLIP-H under
``cond_stage_model.model.``. Both directions are exact (pure re-arrangement).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_HF_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)$")
_OC_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_RENAME = {  # per-layer names that map one to one
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OTHER_TOWERS = (
    "visual.",
    "logit_scale",
    "logit_bias",
    "attn_mask",
)  # image tower and buffers of a full model
_GLOBAL = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def is_openclip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the keys are OpenCLIP's (``transformer.resblocks.*``, bare or under ``model.``)."""
    return any(_OC_LAYER.match(k.removeprefix("model.")) for k in state_dict)


def hf_to_openclip(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested HF keys (``text_model.*``, ``text_projection.weight``) -> OpenCLIP keys under ``prefix``."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in _GLOBAL:
            out[prefix + _GLOBAL[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.t().contiguous()
        elif m := _HF_LAYER.match(key):
            layer, rest = m.groups()
            module, _, param = rest.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((layer, param), {})[module[-6]] = value
            elif module in _RENAME:
                out[f"{prefix}transformer.resblocks.{layer}.{_RENAME[module]}.{param}"] = value
            else:
                raise KeyError(f"no OpenCLIP name for {key!r}")
        else:
            raise KeyError(f"no OpenCLIP name for {key!r}")
    for (layer, param), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise KeyError(f"layer {layer} lacks some of q/k/v_proj.{param}")
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return out


def openclip_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP keys (bare or under ``model.``) -> nested HF keys; keys of other towers are left out."""
    back = {v: k for k, v in _GLOBAL.items()}
    rename = {v: k for k, v in _RENAME.items()}
    out: dict[str, torch.Tensor] = {}
    for full_key, value in state_dict.items():
        key = full_key.removeprefix("model.")
        if key in back:
            out[back[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif m := _OC_LAYER.match(key):
            layer, rest = m.groups()
            module, _, param = rest.rpartition(".")
            base = f"text_model.encoder.layers.{layer}."
            if module == "attn" and param in ("in_proj_weight", "in_proj_bias"):
                kind = param.removeprefix("in_proj_")
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{name}.{kind}"] = chunk.contiguous()
            elif module in rename:
                out[f"{base}{rename[module]}.{param}"] = value
            else:
                out[full_key] = value  # unknown: left for the caller, which reports it
        elif not key.startswith(_OTHER_TOWERS):
            out[full_key] = value
    return out
