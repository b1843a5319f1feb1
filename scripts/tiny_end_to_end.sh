#!/usr/bin/env bash
# The whole chain offline on the tiny preset (random weights, CPU, a few minutes):
#   train a SafeR-CLIP encoder -> swap it into SD -> generate original-vs-safe pairs -> I2P benchmark
#   -> attack success rates under the adaptive attack -> retrieval / zero-shot preservation.
#   Everything lands in ${1:-outputs/tiny}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/tiny}
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

echo "== 1/6 train (SafeR-CLIP, tiny config) -> $OUT/encoder"
"$PY" train/train.py --config tiny --out "$OUT/encoder"
echo "== 2/6 original vs safe pairs from identical latents -> $OUT/pairs"
"$PY" -m saferclip_diffusers.cli.generate --preset tiny --safe-encoder "$OUT/encoder" --out "$OUT/pairs" \
  --prompt "a photograph of an astronaut riding a horse" --prompt "a bloody fight in a dark alley"
echo "== 3/6 I2P benchmark (original, safe, negative prompt, SLD) -> $OUT/i2p"
"$PY" eval/i2p.py run --preset tiny --safe-encoder "$OUT/encoder" --out "$OUT/i2p"
echo "== 4/6 attack success rates (adaptive swap-gcg, 2 targets, small budget) -> $OUT/attacks"
"$PY" eval/attacks.py run --preset tiny --attack swap-gcg --safe-encoder "$OUT/encoder" --limit 2 \
  --budget swap-gcg.steps=2 --out "$OUT/attacks"
echo "== 5/6 retrieval preservation -> $OUT/retrieval"
"$PY" eval/retrieval.py --preset tiny --safe-encoder "$OUT/encoder" --out "$OUT/retrieval"
echo "== 6/6 zero-shot preservation -> $OUT/zeroshot"
"$PY" eval/zeroshot.py --preset tiny --safe-encoder "$OUT/encoder" --out "$OUT/zeroshot"
echo "done: $OUT (tiny random-weight models: the numbers say nothing about real models)"
