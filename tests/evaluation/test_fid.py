"""FID through torchmetrics with a small feature extractor, checked against the Frechet distance formula."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from saferclip_diffusers.evaluation.fid import frechet_distances, list_images, to_uint8


class ColourStats(torch.nn.Module):
    """uint8 (N, 3, H, W) -> (N, 6): per-channel means and standard deviations (a stand-in for Inception)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def images(seed: int, n: int, shift: float = 0.0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.uniform(0, 1, size=3) * 0.6 + shift
        pixels = np.clip(base + rng.normal(0, rng.uniform(0.05, 0.3), size=(16, 16, 3)), 0, 1)
        out.append(Image.fromarray((pixels * 255).astype(np.uint8)))
    return out


def frechet_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)), unbiased covariances, float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_fid_equals_the_frechet_distance_of_the_features(tmp_path):
    reference, near, far = images(0, 24), images(1, 20), images(2, 20, shift=0.35)
    for i, im in enumerate(reference):
        im.save(tmp_path / f"{i:03d}.png")
    fid = frechet_distances(
        tmp_path, {"near": near, "far": far}, feature=ColourStats(), image_size=16, batch_size=7
    )
    net = ColourStats()

    def feats(ims):
        return net(torch.stack([to_uint8(im, 16) for im in ims])).double().numpy()

    assert fid["near"] == pytest.approx(frechet_by_hand(feats(reference), feats(near)), rel=1e-4, abs=1e-6)
    assert fid["far"] == pytest.approx(frechet_by_hand(feats(reference), feats(far)), rel=1e-4, abs=1e-6)
    assert fid["far"] > 5 * fid["near"]  # the shifted set is further from the reference


def test_fid_inputs_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(ValueError, match="at least 2 generated"):
        frechet_distances(images(0, 4), {"safe": images(1, 1)}, feature=ColourStats(), image_size=16)
