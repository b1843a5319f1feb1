"""DES: each loss against a direct transcription of amoeba04/des train_des.py (written here independently), the
farthest-codebook search, exactly-zero preservation at initialisation, and a short `method: des` training run."""

import json

import torch

from saferclip_diffusers.training.methods.des import (
    concept_neutralisation,
    des_total,
    farthest,
    safe_preservation,
    unsafe_redirection,
)


def _one_minus_cos_mean(a, b):
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return (1 - cos).mean()


def test_each_des_loss_equals_a_direct_transcription():
    g = torch.Generator().manual_seed(0)
    B, L, D, gamma, lam = 5, 7, 6, 3.0, 0.3
    live_s, frozen_s = torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)
    live_u, far = torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)
    concept, empty = torch.randn(1, L, D, generator=g), torch.randn(1, L, D, generator=g)
    d = concept.reshape(-1) / concept.reshape(-1).norm()
    targets = far.reshape(B, -1) - gamma * d

    sep, aug = safe_preservation(live_s, frozen_s.reshape(B, -1), d, gamma)
    want_sep = _one_minus_cos_mean(live_s, frozen_s)
    want_aug = _one_minus_cos_mean(live_s.reshape(B, -1) + gamma * d, frozen_s)
    torch.testing.assert_close(sep.double(), want_sep, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aug.double(), want_aug, rtol=1e-5, atol=1e-6)
    uen = unsafe_redirection(live_u, targets)
    torch.testing.assert_close(uen.double(), _one_minus_cos_mean(live_u, targets), rtol=1e-5, atol=1e-6)
    nen = concept_neutralisation(concept, empty)
    torch.testing.assert_close(nen.double(), _one_minus_cos_mean(concept, empty), rtol=1e-5, atol=1e-6)
    total = des_total(sep + aug, uen, nen, lam)
    want = lam * (want_sep + want_aug) + (1 - lam) * (
        _one_minus_cos_mean(live_u, targets) + _one_minus_cos_mean(concept, empty)
    )
    torch.testing.assert_close(total.double(), want, rtol=1e-5, atol=1e-6)


def test_farthest_is_the_least_cosine_similar_key():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1]])
    keys = keys / keys.norm(dim=1, keepdim=True)
    queries = torch.tensor([[[2.0, 0.0]], [[-1.0, 0.0]], [[0.0, -3.0]]])  # [N, L=1, D]
    assert farthest(queries, keys, chunk=2).tolist() == [2, 0, 1]


def test_des_trains_with_zero_preservation_at_init(tmp_path, small_config):
    from transformers import CLIPTextModel

    from saferclip_diffusers.tiny import tiny_model_dir
    from saferclip_diffusers.training.trainer import Trainer

    cfg = small_config("method=des", "finetune=full", "optim.lr=1e-3", "optim.epochs=1")
    trainer = Trainer(cfg, tmp_path / "des").setup()
    # the far targets index training safe captions only
    assert set(trainer.method.far["text_encoder"].tolist()) <= set(trainer.split.train_safe.tolist())
    _, logs = trainer.batch_loss(*[x[: cfg.optim.batch_size] for x in trainer.epoch_plan(1)[0]])
    assert logs["des_safe"] == 0.0  # E(s) == E0(s) before the first update: exactly zero
    assert logs["des_concept_aug"] > 0 and logs["des_unsafe"] > 0
    result = trainer.train()
    trainer.export()
    trainer.close()
    assert result.finished
    rows = [json.loads(x) for x in (tmp_path / "des" / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["des_safe"] > 0  # the encoder moved
    exported = CLIPTextModel.from_pretrained(tmp_path / "des" / "text_encoder")
    base = CLIPTextModel.from_pretrained(tiny_model_dir("clip"))
    emb = "embeddings.token_embedding.weight"
    assert not torch.equal(
        exported.state_dict()[emb], base.state_dict()[emb]
    )  # full fine-tune: embeddings too
    assert "DES (arXiv 2501.18877" in (tmp_path / "des" / "README.md").read_text()
