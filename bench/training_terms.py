"""Does each active text-only loss term move what it should?  Ablations on the tiny random-weight CLIP.

    python bench/training_terms.py            # 2 seeds x 5 runs, about 3 minutes on one CPU core
    python bench/training_terms.py --quick    # 1 seed, fewer epochs: checks the harness
    python bench/training_terms.py --method safeclip   # Safe-CLIP's text-only terms

Both methods use the mined (proximity) targets here, so only the loss terms differ. Data: 160 COCO captions turned unsafe by an appended phrase (NSFW-Caps style), each paired with an *unrelated*
safe caption (ViSU-style misalignment); text-only SafeR-CLIP (no images), so the active terms are ``pres_text``,
``redir_text``, ``rel_text_uni`` and ``pres_text_nbr`` (losses.TEXT_ONLY_REPLACEMENTS). Each run drops one term
(weight 0) and reports the validation metrics each term is meant to move. Writes
``bench/results/training_terms.json`` and prints a markdown table. Random weights: the numbers check that the
terms act, not how a real CLIP behaves. The same ablation on a real pretrained sentence encoder (all-MiniLM-L6-v2,
not CLIP) is ``experiments/term_ablation.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHRASES = [
    "covered in blood",
    "next to a gun",
    "with a naked body",
    "next to a corpse",
    "full of drugs",
    "with a bloody knife",
]
TERMS = {
    "saferclip": ["pres_text", "redir_text", "rel_text_uni", "pres_text_nbr"],
    "safeclip": ["text_safe", "text_nsfw", "U_Tref", "S_nbr"],
}
METRICS = [
    "redirect_train@1",
    "redirect@1",
    "target_cos",
    "margin_unsafe",
    "shift_unsafe",
    "drift_safe",
    "safe_nbr@10",
    "safe_self@1",
]
EXPECT = {  # the metric a term should move when it is dropped, and the direction it moves
    "pres_text": ("drift_safe", "up"),
    "redir_text": ("target_cos", "down"),
    "rel_text_uni": ("margin_unsafe", "down"),
    "pres_text_nbr": ("safe_nbr@10", "down"),
    "text_safe": ("drift_safe", "up"),
    "text_nsfw": ("target_cos", "down"),
    "U_Tref": ("shift_unsafe", "down"),
    "S_nbr": ("safe_nbr@10", "down"),
}


def misaligned_pairs(folder: Path) -> Path:
    import pandas as pd

    from saferclip_diffusers.data import COCO_30K_CSV

    captions = pd.read_csv(COCO_30K_CSV).prompt.drop_duplicates().tolist()[:160]
    partners = list(captions)
    random.Random(0).shuffle(partners)
    rows = [
        {"safe": partners[i], "unsafe": c.rstrip(". ") + " " + PHRASES[i % len(PHRASES)]}
        for i, c in enumerate(captions)
    ]
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run_one(
    data: Path, out: Path, seed: int, epochs: int, drop: str | None, method: str = "saferclip"
) -> dict:
    from saferclip_diffusers.training.config import load_config
    from saferclip_diffusers.training.trainer import train

    overrides = [
        f"method={method}",
        "mining.targets=proximity",
        "data.format=pairs",
        f"data.path={data}",
        "data.max_unsafe=null",
        "data.max_safe=null",
        "data.val_size=32",
        "optim.batch_size=16",
        f"optim.epochs={epochs}",
        "optim.lr=6e-3",
        f"seed={seed}",
        "encoders.0.hidden_weight=0",
        "run.checkpoint_every=100000",
        f"run.cache_dir={out.parent / 'cache'}",
    ]
    if drop:
        overrides.append(f"loss.weights.{drop}=0")
    rows = train(load_config("tiny", overrides), out, export=False).validation
    last = {k.split("/")[-1]: v for k, v in rows[-1].items()}
    # mean cos(T(t*), T0(t̂)) over the validation unsafe prompts = margin + cos(T(t*), T0(t*)) = margin + 1 - shift
    last["target_cos"] = last["margin_unsafe"] + 1 - last["shift_unsafe"]
    return {m: last.get(m) for m in METRICS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one seed, 3 epochs")
    parser.add_argument("--method", choices=sorted(TERMS), default="saferclip")
    parser.add_argument(
        "--out", default=None, help="results file (default bench/results/training_terms[-METHOD].json)"
    )
    args = parser.parse_args(argv)
    import torch

    from saferclip_diffusers.io import atomic_write_json

    terms = TERMS[args.method]
    suffix = "" if args.method == "saferclip" else f"-{args.method}"
    out = args.out or str(ROOT / "bench" / "results" / f"training_terms{suffix}.json")

    torch.set_num_threads(1)
    seeds, epochs = ([0], 3) if args.quick else ([0, 1], 8)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="saferclip-terms-") as tmp:
        data = misaligned_pairs(Path(tmp))
        for drop in [None, *terms]:
            name = "all terms" if drop is None else f"without {drop}"
            results[name] = [
                run_one(data, Path(tmp) / f"{name}-{s}".replace(" ", "_"), s, epochs, drop, args.method)
                for s in seeds
            ]
    mean = {name: {m: sum(r[m] for r in runs) / len(runs) for m in METRICS} for name, runs in results.items()}
    verdict = {}
    for term in terms:
        metric, way = EXPECT[term]
        delta = mean[f"without {term}"][metric] - mean["all terms"][metric]
        verdict[term] = {
            "metric": metric,
            "expected": way,
            "delta": delta,
            "holds": delta > 0 if way == "up" else delta < 0,
        }
    atomic_write_json(
        out,
        {
            "note": f"tiny random-weight CLIP; text-only {args.method}; means over seeds",
            "seeds": seeds,
            "epochs": epochs,
            "runs": results,
            "mean": mean,
            "verdict": verdict,
        },
    )
    print("| run | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for name, row in mean.items():
        print(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    for term, v in verdict.items():
        print(
            f"- dropping `{term}` moves `{v['metric']}` by {v['delta']:+.3f} (expected {v['expected']}): "
            f"{'holds' if v['holds'] else 'does NOT hold'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
