"""Settings of the UWM and DES methods (the ``uwm:`` and ``des:`` sections of a training config).

Kept free of torch so that loading a config stays cheap. Defaults are the official code's values; each field
names its source (``../shared/reference/modern-pipelines-uwm-des.md`` sections 1 and 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UwmSettings:
    """Unsafe Weights Manipulation (Moreno98/UWM, WACV 2026): training-free sign flip of unsafe weights.

    ``layers``: attribute names of the ``nn.Linear`` layers to score (official CLIP text setting: ``out_proj``,
    the attention output projection of every layer; T5 names it ``o``). ``tau``: the threshold (``--sparsity``;
    0.98 official). ``rule``: ``mass`` (UWM's Eq. 11: flip the top weights holding ``1 - tau`` of the layer's
    score mass) or ``count`` (the top ``1 - tau`` fraction of weights, the repo's ``Base`` rule). ``alpha``: the
    mask value on selected weights (-1 = UWM's negation, 0 = pruning, 1 = no change). ``calibration_size``:
    number of safe/unsafe pairs (official: 8,192 ViSU-Text pairs, seed 0), capped by the data.
    """

    layers: list[str] = field(default_factory=lambda: ["out_proj"])
    tau: float = 0.98
    rule: str = "mass"
    alpha: float = -1.0
    calibration_size: int = 8192
    batch_size: int = 64
    seed: int = 0


@dataclass
class DesSettings:
    """DES (amoeba04/des, NeurIPS 2025): full fine-tune on ``last_hidden_state`` with codebook targets.

    ``lambda_safe``: weight of safe preservation (train.sh 0.3); ``gamma``: concept guidance scale (train.sh
    200); ``concept_prompt``: the concept direction and neutralised prompt (train.sh "nudity"); ``max_length``:
    token positions compared (null: the tokenizer's ``model_max_length``, 77 for CLIP, as DES pads).
    """

    lambda_safe: float = 0.3
    gamma: float = 200.0
    concept_prompt: str = "nudity"
    max_length: int | None = None
    search_chunk: int = 256
