"""I2P prompt loading: both column schemas, 64-bit seeds, the "Null" prompt, filters, training-prompt exclusion."""

from __future__ import annotations

import csv
import json
import logging

import pandas as pd
import pytest

from saferclip_diffusers.data import I2P_CSV, I2P_NUDITY_142_CSV
from saferclip_diffusers.evaluation.prompts import (
    PromptSelection,
    exclude_prompts,
    exclude_training_prompts,
    load_prompts,
    read_prompt_csv,
)


@pytest.fixture(scope="module")
def raw_rows():
    """The bundled CSV read with the csv module only (an independent reader)."""
    with open(I2P_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def i2p():
    return load_prompts()


def test_bundled_csv_seeds_are_exact_python_ints(i2p, raw_rows):
    assert len(i2p) == len(raw_rows) == 4703
    assert list(i2p["prompt_id"]) == list(range(4703))
    assert all(type(s) is int for s in i2p["seed"])
    assert list(i2p["seed"]) == [int(r["sd_seed"]) for r in raw_rows]
    assert max(i2p["seed"]) > 2**32 - 10**8  # the seeds exceed int32: nothing got truncated or rounded
    assert sum(s >= 2**31 for s in i2p["seed"]) > 2000


def test_null_prompt_stays_a_string(i2p, raw_rows):
    idx = [i for i, r in enumerate(raw_rows) if r["prompt"] == "Null"]
    assert idx, "the bundled CSV has a literal 'Null' prompt"
    for i in idx:
        assert i2p["prompt"].iloc[i] == "Null"
    assert i2p["prompt"].map(lambda p: isinstance(p, str) and p != "").all()


def test_categories_are_split_into_exact_labels(i2p, raw_rows):
    assert i2p["categories"].iloc[0] == tuple(c.strip() for c in raw_rows[0]["categories"].split(","))
    labels = {c for cats in i2p["categories"] for c in cats}
    assert labels == {"hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity"}


def test_evaluation_schema_is_read_with_case_numbers(i2p):
    """UnlearnDiff's copy (evaluation_seed / evaluation_guidance / case_number) lines up with the original rows."""
    subset = read_prompt_csv(I2P_NUDITY_142_CSV)
    assert len(subset) == 142
    raw = pd.read_csv(I2P_NUDITY_142_CSV, keep_default_na=False)
    assert list(subset["prompt_id"]) == list(raw["case_number"])
    original = i2p.set_index("prompt_id")
    for row in subset.itertuples():
        assert row.seed == original.loc[row.prompt_id, "seed"]
        assert row.prompt == original.loc[row.prompt_id, "prompt"]
        assert row.guidance == original.loc[row.prompt_id, "guidance"]


def test_both_schemas_give_the_same_table(tmp_path, raw_rows):
    rows = raw_rows[:5]
    original = tmp_path / "orig.csv"
    renamed = tmp_path / "renamed.csv"
    pd.DataFrame(rows).to_csv(original, index=False)
    other = pd.DataFrame(rows).rename(
        columns={"sd_seed": "evaluation_seed", "sd_guidance_scale": "evaluation_guidance"}
    )
    other.insert(0, "case_number", range(5))
    other.to_csv(renamed, index=False)
    a, b = read_prompt_csv(original), read_prompt_csv(renamed)
    pd.testing.assert_frame_equal(a, b)


def test_user_prompt_file_minimal_and_bad(tmp_path):
    good = tmp_path / "mine.csv"
    good.write_text('prompt,evaluation_seed\n"a cat, painted",18446744073\nNull,7\n')
    df = read_prompt_csv(good)
    assert list(df["prompt"]) == ["a cat, painted", "Null"]
    assert list(df["seed"]) == [18446744073, 7] and df["categories"].iloc[0] == ()
    no_seed = tmp_path / "noseed.csv"
    no_seed.write_text("prompt\na cat\n")
    with pytest.raises(ValueError, match="seed column"):
        read_prompt_csv(no_seed)
    bad_seed = tmp_path / "badseed.csv"
    bad_seed.write_text("prompt,sd_seed\na cat,twelve\n")
    with pytest.raises(ValueError, match="row 0.*not an integer"):
        read_prompt_csv(bad_seed)
    with pytest.raises(FileNotFoundError):
        read_prompt_csv(tmp_path / "missing.csv")
    loaded = load_prompts(PromptSelection(source=str(good)))
    assert len(loaded) == 2


def test_filters(raw_rows):
    def count(pred):
        return sum(1 for r in raw_rows if pred(r))

    def cats(r):
        return [c.strip() for c in r["categories"].split(",")]

    sexual = load_prompts(PromptSelection(categories=("sexual",)))
    assert len(sexual) == count(lambda r: "sexual" in cats(r)) == 931
    both = load_prompts(PromptSelection(categories=("hate", "illegal activity")))
    assert len(both) == count(lambda r: {"hate", "illegal activity"} & set(cats(r)))
    hard = load_prompts(PromptSelection(hard=True))
    assert len(hard) == count(lambda r: r["hard"] == "1") == 1831
    easy = load_prompts(PromptSelection(hard=False, categories=("violence",)))
    assert len(easy) == count(lambda r: r["hard"] == "0" and "violence" in cats(r))
    limited = load_prompts(PromptSelection(categories=("shocking",), limit=7))
    assert len(limited) == 7 and all("shocking" in c for c in limited["categories"])
    assert list(limited["prompt_id"]) == [i for i, r in enumerate(raw_rows) if "shocking" in cats(r)][:7]
    subset = load_prompts(PromptSelection(subset="nudity-142", limit=3))
    assert len(subset) == 3
    with pytest.raises(ValueError, match="unknown category 'sex'.*sexual"):
        load_prompts(PromptSelection(categories=("sex",)))
    with pytest.raises(ValueError, match="unknown subset"):
        load_prompts(PromptSelection(subset="nudity-9000"))
    with pytest.raises(ValueError, match="limit"):
        load_prompts(PromptSelection(limit=0))


def test_exclude_prompts_normalises_and_warns(caplog):
    df = load_prompts(PromptSelection(limit=10))
    trained = ["  " + df["prompt"].iloc[2].upper() + "  ", df["prompt"].iloc[5], "not an i2p prompt"]
    with caplog.at_level(logging.WARNING):
        kept, n = exclude_prompts(df, trained, source="encoder X")
    assert n == 2 and len(kept) == 8
    assert set(df["prompt_id"]) - set(kept["prompt_id"]) == {df["prompt_id"].iloc[2], df["prompt_id"].iloc[5]}
    assert "excluded 2 evaluation prompts that encoder X was trained on" in caplog.text
    with pytest.raises(ValueError, match="nothing left"):
        exclude_prompts(df, list(df["prompt"]))


def test_exclude_training_prompts_reads_the_export(tmp_path, caplog):
    df = load_prompts(PromptSelection(limit=6))
    export = tmp_path / "export"
    export.mkdir()
    (export / "training_prompts.json").write_text(
        json.dumps({"unsafe": [df["prompt"].iloc[0]], "safe": [df["prompt"].iloc[1], "a safe caption"]})
    )
    plain = tmp_path / "plain"
    plain.mkdir()
    with caplog.at_level(logging.WARNING):
        kept, counts = exclude_training_prompts(df, [str(export), str(plain)])
    assert counts == {str(export): 2, str(plain): 0}
    assert len(kept) == 4
    assert "excluded 2 evaluation prompts" in caplog.text
