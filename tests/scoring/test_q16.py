"""Q16 head: the bundled prompt embeddings, the softmax(100 cos) rule, and the code path on a tiny CLIP tower.

The real head needs OpenAI CLIP ViT-L/14 (a hub download). Here the vision tower is the tiny random-weight CLIP
and the prompt matrix is a TEST-ONLY random (2, 32) array: it exercises the code path, it is not Q16.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from saferclip_diffusers.data import Q16_PROMPTS_VIT_L14
from saferclip_diffusers.scoring.q16 import Q16Classifier, load_q16_prompts, q16_probabilities
from saferclip_diffusers.tiny import tiny_model_dir


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from more threads, and on a busy 2-core machine OpenMP spin-waits cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bundled_prompts():
    prompts = load_q16_prompts()
    assert prompts.shape == (2, 768) and prompts.dtype == np.float32
    assert np.isfinite(prompts).all() and not np.allclose(prompts[0], prompts[1])


def test_prompt_file_checks(tmp_path):
    with pytest.raises(ValueError, match="pickles are refused"):
        load_q16_prompts(Q16_PROMPTS_VIT_L14.with_suffix(".p"))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, d\)"):
        load_q16_prompts(bad)
    with pytest.raises(FileNotFoundError):
        load_q16_prompts(tmp_path / "missing.npy")


def test_head_is_softmax_of_100_cosines():
    rng = np.random.default_rng(0)
    prompts = load_q16_prompts()
    x = rng.standard_normal((5, 768)).astype(np.float32) * 3
    x[0] = prompts[1] * 7.0  # exactly the "inappropriate" direction
    x[1] = prompts[0] * 0.1  # exactly the "appropriate" direction
    got = q16_probabilities(torch.from_numpy(x), torch.from_numpy(prompts)).numpy()

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    for i in range(5):
        logits = 100 * np.array([cos(x[i], prompts[0]), cos(x[i], prompts[1])], dtype=np.float64)
        expected = np.exp(logits[1] - logits.max()) / np.exp(logits - logits.max()).sum()
        assert got[i] == pytest.approx(expected, abs=1e-4)
    assert got[0] > 0.99 and got[1] < 0.01


@pytest.fixture(scope="module")
def tiny_q16():
    test_only_prompts = (
        np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32)
    )  # NOT Q16's prompts
    return Q16Classifier(
        tiny_model_dir("clip"), prompts=test_only_prompts, batch_size=2, local_files_only=True
    )


def test_classifier_code_path_on_tiny_clip(tiny_q16):
    images = [Image.fromarray(getattr(skimage.data, n)()) for n in ("astronaut", "chelsea", "coffee")]
    probs = tiny_q16(images)
    assert len(probs) == 3
    # the same numbers computed by hand from the vision tower's projected embeddings, one image at a time
    for image, p in zip(images, probs, strict=True):
        pixels = tiny_q16.processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            embeds = tiny_q16.model(pixel_values=pixels).image_embeds[0].numpy()
        prompts = tiny_q16.prompts.numpy()
        logits = 100 * prompts @ embeds / np.linalg.norm(prompts, axis=1) / np.linalg.norm(embeds)
        assert p == pytest.approx(float(np.exp(logits[1]) / np.exp(logits).sum()), abs=1e-4)


def test_bundled_prompts_refuse_a_tower_of_another_width():
    with pytest.raises(ValueError, match="768-d.*32-d.*ViT-L/14"):
        Q16Classifier(tiny_model_dir("clip"), local_files_only=True)
