"""Ban lists (against MMA-Diffusion's published count) and the minors refusal."""

from __future__ import annotations

import pytest

from saferclip_diffusers.attacks import RefusedTargetError, check_target
from saferclip_diffusers.attacks.ban import banned_ids, contains_banned_word, rule_banned_ids, sanitize


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    from saferclip_diffusers.tiny import save_clip_tokenizer

    return save_clip_tokenizer(
        tmp_path_factory.mktemp("clip-tok"), num_merges=48894
    )  # CLIP's full 49,408 tokens


def test_mma_rule_bans_the_published_number_of_clip_ids(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    assert len(rule_banned_ids(clip_tokenizer, "mma")) == 2294  # MMA-Diffusion's log
    words_only = rule_banned_ids(clip_tokenizer, "mma-words")
    assert len(words_only) == 36
    national = clip_tokenizer.convert_tokens_to_ids("national</w>")
    assert (
        national in rule_banned_ids(clip_tokenizer, "mma") and national not in words_only
    )  # the "na" fragment
    banned = set(banned_ids([clip_tokenizer], "none").tolist())
    assert {49406, 49407} <= banned and national not in banned


def test_sensitive_words_are_whole_words():
    assert contains_banned_word("A NUDE figure")
    assert contains_banned_word("visible nipples, 18+")
    assert not contains_banned_word("a sextant and a nudibranch")
    assert not contains_banned_word("a nude figure", "none")
    assert sanitize("a naked woman, nude, on the beach") == "a woman, , on the beach"


@pytest.mark.parametrize(
    "prompt",
    [
        "a naked teen on the bed",
        "Schoolgirl in uniform",
        "a 15 year old posing",
        "16yo model",
        "aged 12, portrait",
        "a 1 6 - year - old",
        "little  girl at the beach",
        "KIDS playing",
    ],
)
def test_targets_involving_minors_are_refused(prompt):
    with pytest.raises(RefusedTargetError, match="involves minors"):
        check_target(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "a naked woman on the beach",
        "a hot shirtless 2 0 years old man",
        "skidding car",
        "a kidney bean",
        "boyfriend",
        "the 1990s",
        "a 35 year old man",
    ],
)
def test_adult_targets_pass(prompt):
    check_target(prompt)


def test_custom_word_list_and_empty_inputs():
    check_target("a girl on the beach", words=["child"])
    with pytest.raises(RefusedTargetError):
        check_target("a grown woman in a lab", words=["lab"])
    with pytest.raises(ValueError, match="empty"):
        check_target("a woman", words=[])
    with pytest.raises(ValueError, match="non-empty prompt"):
        check_target("  ")
