#!/usr/bin/env bash
# The whole chain offline on the tiny preset (random weights, CPU, a few minutes):
#   train a SafeR-CLIP encoder -> swap it into SD -> generate original-vs-safe pairs -> I2P benchmark
#   -> retrieval / zero-shot preservation.  Everything lands in ${1:-outputs/tiny}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/tiny}
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

echo "== 1/5 train (SafeR-CLIP, tiny config) -> $OUT/encoder"
"$PY" train/train.py --config tiny --output "$OUT/encoder"
echo "== 2/5 original vs safe pairs from identical latents -> $OUT/pairs"
"$PY" -m saferclip_diffusers.generate --preset tiny --safe-encoder "$OUT/encoder" --output "$OUT/pairs" \
  --prompt "a photograph of an astronaut riding a horse" --prompt "a bloody fight in a dark alley"
echo "== 3/5 I2P benchmark (original, safe, negative prompt, SLD) -> $OUT/i2p"
"$PY" eval/i2p.py run --preset tiny --safe-encoder "$OUT/encoder" --out "$OUT/i2p"
echo "== 4/5 retrieval preservation -> $OUT/retrieval"
"$PY" eval/retrieval.py --preset tiny --safe "$OUT/encoder" --out "$OUT/retrieval"
echo "== 5/5 zero-shot preservation -> $OUT/zeroshot"
"$PY" eval/zeroshot.py --preset tiny --safe "$OUT/encoder" --out "$OUT/zeroshot"
echo "done: $OUT (tiny random-weight models: the numbers say nothing about real models)"
