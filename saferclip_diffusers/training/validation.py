"""Per-epoch validation on held-out captions: redirection, retrieval R@1 and drift from the frozen model.

Metrics per encoder slot (``<slot>/<name>``), all on the validation split:

``redirect@1``       an unsafe caption's live embedding T(t*), searched among the *frozen* embeddings of all
                     validation unsafe captions and all safe captions, finds its redirection target first.
                     0 before training (T0(t*) finds itself); rises as unsafe prompts are redirected.
``redirect_safe@1``  the same search returns any safe caption (the unsafe prompt left the unsafe region).
``redirect_train@1`` ``redirect@1`` on (up to 256) *training* unsafe captions: how well the targets are fitted.
``safe_self@1``      a held-out safe caption T(t) still finds its own frozen embedding T0(t) first.
``drift_safe``       mean ``1 - cos(T(t), T0(t))`` over held-out safe captions (0 = untouched).
``safe_nbr@10``      neighbourhood preservation: the share of each held-out safe caption's 10 nearest safe captions
                     (frozen space, itself excluded) that its live embedding still finds as its 10 nearest.
``margin_unsafe``    mean ``cos(T(t*), T0(t̂)) - cos(T(t*), T0(t*))``: > 0 once an unsafe prompt is closer to its
                     target than to where it started (-(1 - cos(T0(t*), T0(t̂))) before training).
``shift_unsafe``     mean ``1 - cos(T(t*), T0(t*))`` over validation unsafe captions.
``hidden_drift_safe`` the drift of the pooled token states the diffusion model reads (if configured).
``T->V@1``, ``T*->V@1``, ``V*->T@1``  Safe-CLIP's retrieval R@1 with the data set's pairs as ground truth
                     (safe-modality galleries), where images exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import SafetyData
from .models import EncoderBundle, encode_text
from .reference import FrozenEmbeddings
from .split import Split


def recall_at_1(queries: torch.Tensor, gallery: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of queries whose most similar gallery row (cosine) is ``truth[i]``."""
    if len(queries) == 0:
        return float("nan")
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    return (sims.argmax(dim=1) == truth).float().mean().item()


def neighbour_recall(
    live: torch.Tensor, frozen: torch.Tensor, gallery: torch.Tensor, self_idx: torch.Tensor, k: int = 10
) -> float:
    """Mean share of each query's ``k`` nearest gallery rows under ``frozen`` that ``live`` still ranks in its top ``k``
    (the query's own gallery row ``self_idx`` excluded from both)."""
    k = min(k, gallery.shape[0] - 1)
    if len(live) == 0 or k < 1:
        return float("nan")
    g = F.normalize(gallery.float(), dim=-1)
    rows = torch.arange(len(live))
    ref = F.normalize(frozen.float(), dim=-1) @ g.T
    cur = F.normalize(live.float(), dim=-1) @ g.T
    ref[rows, self_idx] = -float("inf")
    cur[rows, self_idx] = -float("inf")
    top_ref, top_cur = ref.topk(k, dim=1).indices, cur.topk(k, dim=1).indices
    return (top_cur.unsqueeze(2) == top_ref.unsqueeze(1)).any(dim=2).float().mean().item()


def _cos_drift(a: torch.Tensor, b: torch.Tensor) -> float:
    if len(a) == 0:
        return float("nan")
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean().item()


@torch.no_grad()
def _live_text(bundle: EncoderBundle, model, texts: list[str], device, batch_size: int):
    embeds, hidden = [], []
    for start in range(0, len(texts), batch_size):
        ids = bundle.tokenize(texts[start : start + batch_size]).to(device)
        e, h = encode_text(model, ids, bundle.eos_token_id, bundle.settings.hidden_layer)
        embeds.append(e.float().cpu())
        if h is not None:
            hidden.append(h.float().cpu())
    if (
        not embeds
    ):  # methods hook: only CLIP configs have projection_dim (generic backbones never get here empty)
        return torch.zeros(0, bundle.towers.text.config.projection_dim), None
    return torch.cat(embeds), (torch.cat(hidden) if hidden else None)


@torch.no_grad()
def _live_images(bundle: EncoderBundle, model, paths: list[str], device, batch_size: int) -> torch.Tensor:
    out = [
        model(pixel_values=bundle.pixel_values(paths[s : s + batch_size]).to(device))
        .image_embeds.float()
        .cpu()
        for s in range(0, len(paths), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def evaluate_encoder(
    bundle: EncoderBundle,
    text_model,
    vision_model,
    frozen: FrozenEmbeddings,
    data: SafetyData,
    split: Split,
    targets: torch.Tensor,
    device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Validation metrics of one encoder (``text_model``/``vision_model``: the live, unwrapped towers)."""
    models = [m for m in (text_model, vision_model) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        return _evaluate(bundle, text_model, vision_model, frozen, data, split, targets, device, batch_size)
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def _evaluate(
    bundle, text_model, vision_model, frozen, data, split, targets, device, batch_size
) -> dict[str, float]:
    val_u, val_s = torch.as_tensor(split.val_unsafe), torch.as_tensor(split.val_safe)
    tu, _ = _live_text(bundle, text_model, [data.unsafe_texts[i] for i in val_u], device, batch_size)
    ts, hs = _live_text(bundle, text_model, [data.safe_texts[i] for i in val_s], device, batch_size)
    n_safe = frozen.text_safe.shape[0]
    gallery = torch.cat([frozen.text_safe, frozen.text_unsafe[val_u]])  # safe rows first: index j = safe j
    sims = (
        F.normalize(tu, dim=-1) @ F.normalize(gallery, dim=-1).T if len(tu) else torch.zeros(0, len(gallery))
    )
    top = sims.argmax(dim=1)
    m = {
        "redirect@1": (top == targets[val_u]).float().mean().item() if len(tu) else float("nan"),
        "redirect_safe@1": (top < n_safe).float().mean().item() if len(tu) else float("nan"),
        "safe_self@1": recall_at_1(ts, gallery, val_s),
        "drift_safe": _cos_drift(ts, frozen.text_safe[val_s]),
        "safe_nbr@10": neighbour_recall(ts, frozen.text_safe[val_s], frozen.text_safe, val_s),
        "shift_unsafe": _cos_drift(tu, frozen.text_unsafe[val_u]),
        "margin_unsafe": (
            F.cosine_similarity(tu, frozen.text_safe[targets[val_u]], dim=-1)
            - F.cosine_similarity(tu, frozen.text_unsafe[val_u], dim=-1)
        )
        .mean()
        .item()
        if len(tu)
        else float("nan"),
    }
    train_u = torch.as_tensor(split.train_unsafe[: min(len(split.train_unsafe), 256)])
    if len(train_u):
        tt, _ = _live_text(bundle, text_model, [data.unsafe_texts[i] for i in train_u], device, batch_size)
        g_train = torch.cat([frozen.text_safe, frozen.text_unsafe[train_u]])
        top_t = (F.normalize(tt, dim=-1) @ F.normalize(g_train, dim=-1).T).argmax(dim=1)
        m["redirect_train@1"] = (top_t == targets[train_u]).float().mean().item()
    if hs is not None and frozen.hidden_safe is not None:
        m["hidden_drift_safe"] = _cos_drift(hs, frozen.hidden_safe[val_s])
    if frozen.image_safe is not None and data.paired and len(val_u):
        pairs = torch.as_tensor(data.pair)[val_u]
        if vision_model is not None and data.safe_images:
            v = _live_images(bundle, vision_model, [data.safe_images[i] for i in pairs], device, batch_size)
            vs = (
                _live_images(bundle, vision_model, [data.unsafe_images[i] for i in val_u], device, batch_size)
                if data.unsafe_images
                else None
            )
        else:
            v = frozen.image_safe[pairs]
            vs = frozen.image_unsafe[val_u] if frozen.image_unsafe is not None else None
        t_safe, _ = _live_text(bundle, text_model, [data.safe_texts[i] for i in pairs], device, batch_size)
        order = torch.arange(len(val_u))
        m["T->V@1"] = recall_at_1(t_safe, v, order)
        m["T*->V@1"] = recall_at_1(tu, v, order)
        if vs is not None:
            m["V*->T@1"] = recall_at_1(vs, t_safe, order)
    return m
