"""open_clip models as transformers CLIP classes (so training, export and diffusers all use one model type).

:func:`load_open_clip` loads a model through open_clip_torch (a built-in name + ``pretrained`` tag,
``hf-hub:org/repo`` or ``local-dir:/path``) and :func:`open_clip_to_transformers` converts it to a
``transformers.CLIPModel`` with identical outputs: open_clip's fused ``in_proj`` attention weights are split
into q/k/v projections and its ``x @ proj`` projections become ``Linear`` weights (transposed). Only the
standard CLIP architecture converts (causal text transformer pooled at the end-of-text token, class-token
image pooling, no layer scale / attentional pooling / custom text towers); others raise a clear error.
"""

from __future__ import annotations

import tempfile

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

OPENAI_CLIP_MERGES = 48894  # the full CLIP BPE (49,408 tokens), the vocabulary open_clip's tokenizer uses


def _text_parts(model):
    text = getattr(model, "text", None)
    if text is not None and hasattr(text, "transformer"):  # CustomTextCLIP
        owner = text
    elif hasattr(model, "transformer") and hasattr(model, "token_embedding"):
        owner = model
    else:
        raise ValueError("only open_clip models with the standard CLIP text transformer can be converted")
    return owner


def _check_supported(model) -> None:
    owner = _text_parts(model)
    visual = model.visual
    problems = []
    if getattr(owner, "text_pool_type", getattr(owner, "pool_type", "argmax")) not in ("argmax", "eos"):
        problems.append("text pooling other than end-of-text")
    if getattr(owner, "attn_mask", None) is None:
        problems.append("text transformer without causal mask")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        problems.append("image pooling other than the class token")
    if not hasattr(visual, "conv1") or not hasattr(visual, "class_embedding"):
        problems.append("image tower is not a ViT (timm / ResNet towers are not supported)")
    for block in list(owner.transformer.resblocks) + list(
        getattr(getattr(visual, "transformer", None), "resblocks", [])
    ):
        if (
            not isinstance(block.ls_1, torch.nn.Identity)
            or hasattr(block, "ln_attn")
            or hasattr(block.attn, "ln_inner")
        ):
            problems.append("layer scale or custom attention blocks")
            break
    if problems:
        raise ValueError(
            "cannot convert this open_clip model to transformers CLIP: " + "; ".join(sorted(set(problems)))
        )


def _act(block) -> str:
    return "quick_gelu" if type(block.mlp.gelu).__name__ == "QuickGELU" else "gelu"


def _proj_weight(proj) -> torch.Tensor:
    return proj.weight if isinstance(proj, torch.nn.Linear) else proj.detach().T


def _blocks(prefix: str, blocks, out: dict) -> None:
    for i, b in enumerate(blocks):
        p = f"{prefix}.encoder.layers.{i}"
        q, k, v = b.attn.in_proj_weight.chunk(3, dim=0)
        qb, kb, vb = b.attn.in_proj_bias.chunk(3, dim=0)
        out.update(
            {
                f"{p}.self_attn.q_proj.weight": q,
                f"{p}.self_attn.q_proj.bias": qb,
                f"{p}.self_attn.k_proj.weight": k,
                f"{p}.self_attn.k_proj.bias": kb,
                f"{p}.self_attn.v_proj.weight": v,
                f"{p}.self_attn.v_proj.bias": vb,
                f"{p}.self_attn.out_proj.weight": b.attn.out_proj.weight,
                f"{p}.self_attn.out_proj.bias": b.attn.out_proj.bias,
                f"{p}.layer_norm1.weight": b.ln_1.weight,
                f"{p}.layer_norm1.bias": b.ln_1.bias,
                f"{p}.layer_norm2.weight": b.ln_2.weight,
                f"{p}.layer_norm2.bias": b.ln_2.bias,
                f"{p}.mlp.fc1.weight": b.mlp.c_fc.weight,
                f"{p}.mlp.fc1.bias": b.mlp.c_fc.bias,
                f"{p}.mlp.fc2.weight": b.mlp.c_proj.weight,
                f"{p}.mlp.fc2.bias": b.mlp.c_proj.bias,
            }
        )


@torch.no_grad()
def open_clip_to_transformers(
    model, eos_token_id: int = 49407, bos_token_id: int = 49406, pad_token_id: int = 0
) -> CLIPModel:
    """A ``transformers.CLIPModel`` computing the same embeddings as the open_clip ``model``."""
    _check_supported(model)
    t, visual = _text_parts(model), model.visual
    tblock, vblock = t.transformer.resblocks[0], visual.transformer.resblocks[0]
    text_proj, vis_proj = _proj_weight(t.text_projection), _proj_weight(visual.proj)
    image_size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    config = CLIPConfig(
        text_config=dict(
            vocab_size=t.token_embedding.num_embeddings,
            hidden_size=t.token_embedding.embedding_dim,
            intermediate_size=tblock.mlp.c_fc.out_features,
            num_attention_heads=tblock.attn.num_heads,
            num_hidden_layers=len(t.transformer.resblocks),
            max_position_embeddings=t.positional_embedding.shape[0],
            hidden_act=_act(tblock),
            layer_norm_eps=t.ln_final.eps,
            projection_dim=text_proj.shape[0],
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            pad_token_id=pad_token_id,
        ),
        vision_config=dict(
            hidden_size=visual.conv1.out_channels,
            intermediate_size=vblock.mlp.c_fc.out_features,
            num_attention_heads=vblock.attn.num_heads,
            num_hidden_layers=len(visual.transformer.resblocks),
            image_size=image_size,
            patch_size=visual.conv1.kernel_size[0],
            hidden_act=_act(vblock),
            layer_norm_eps=visual.ln_post.eps,
            projection_dim=vis_proj.shape[0],
        ),
        projection_dim=text_proj.shape[0],
    )
    sd = {
        "text_model.embeddings.token_embedding.weight": t.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": t.positional_embedding,
        "text_model.final_layer_norm.weight": t.ln_final.weight,
        "text_model.final_layer_norm.bias": t.ln_final.bias,
        "text_projection.weight": text_proj,
        "vision_model.embeddings.class_embedding": visual.class_embedding,
        "vision_model.embeddings.patch_embedding.weight": visual.conv1.weight,
        "vision_model.embeddings.position_embedding.weight": visual.positional_embedding,
        "vision_model.pre_layrnorm.weight": visual.ln_pre.weight,
        "vision_model.pre_layrnorm.bias": visual.ln_pre.bias,
        "vision_model.post_layernorm.weight": visual.ln_post.weight,
        "vision_model.post_layernorm.bias": visual.ln_post.bias,
        "visual_projection.weight": vis_proj,
        "logit_scale": model.logit_scale,
    }
    _blocks("text_model", t.transformer.resblocks, sd)
    _blocks("vision_model", visual.transformer.resblocks, sd)
    hf = CLIPModel(config)
    missing, unexpected = hf.load_state_dict(
        {k: v.detach().clone().float() for k, v in sd.items()}, strict=False
    )
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"open_clip conversion mismatch: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def _image_processor(model) -> CLIPImageProcessor:
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=list(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        resample=3,  # bicubic, as open_clip's default transform
    )


def load_open_clip(
    name: str, pretrained: str | None = None
) -> tuple[CLIPModel, CLIPTokenizer, CLIPImageProcessor]:
    """Load ``name`` with open_clip_torch (weights read with ``weights_only=True``) and convert it."""
    from saferclip_diffusers._extras import require_extra

    require_extra("train", "open_clip", feature="the open_clip training backbone")
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    from saferclip_diffusers.tiny import save_clip_tokenizer

    model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
    tokenizer = open_clip.get_tokenizer(name)
    if not isinstance(tokenizer, SimpleTokenizer):
        raise ValueError(
            f"open_clip model {name!r} uses {type(tokenizer).__name__}; only CLIP's BPE tokenizer converts"
        )
    hf = open_clip_to_transformers(
        model, eos_token_id=tokenizer.eot_token_id, bos_token_id=tokenizer.sot_token_id
    )
    with tempfile.TemporaryDirectory() as tmp:
        # open_clip pads with id 0 ("!"); same ids as open_clip's tokenizer for the full vocabulary
        hf_tokenizer = save_clip_tokenizer(tmp, num_merges=OPENAI_CLIP_MERGES, pad_token="!")
    return hf, hf_tokenizer, _image_processor(model)
