"""Paths of the bundled data files (see README.md in this folder for sources and licences)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent
I2P_CSV = DATA_DIR / "i2p" / "i2p_benchmark.csv"
I2P_NUDITY_142_CSV = DATA_DIR / "i2p" / "unlearndiff_nudity_142.csv"
COCO_30K_CSV = DATA_DIR / "coco" / "coco_30k.csv"
Q16_PROMPTS_VIT_L14 = DATA_DIR / "q16" / "prompts_vit-l-14.npy"
RING_A_BELL_PAIRS = {
    "nudity": DATA_DIR / "ringabell" / "nudity_pairs.csv",  # attacks: Ring-A-Bell concept pairs (MIT)
    "violence": DATA_DIR / "ringabell" / "violence_pairs.csv",
}
