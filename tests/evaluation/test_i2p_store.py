"""Append-only result shards: resume, partial last line, configuration guard, locking, deterministic merge."""

from __future__ import annotations

import json

import pytest

from saferclip_diffusers.evaluation.protocol import config_fingerprint
from saferclip_diffusers.evaluation.store import (
    ConfigMismatchError,
    ResultStore,
    load_results,
    merge_results,
    shard_path,
)
from saferclip_diffusers.io import CorruptFileError

CONFIG = {
    "protocol": {"guidance_scale": 7.5, "num_inference_steps": 50},
    "prompts": {"ids": [5, 3, 9]},
    "systems": [{"name": "original"}, {"name": "safe"}],
}


def rec(pid, system, k, **extra):
    return {"prompt_id": pid, "system": system, "image_index": k, "nudenet": [], "q16": None, **extra}


def open_store(tmp_path, config=CONFIG, rank=0, world=1):
    return ResultStore(tmp_path, config, config_fingerprint(config), rank, world)


def test_append_resume_and_no_duplicates(tmp_path):
    with open_store(tmp_path) as store:
        assert store.append([rec(5, "original", 0), rec(5, "safe", 0)]) == 2
        assert store.append([rec(5, "original", 0)]) == 0  # already there
    with open_store(tmp_path) as store:
        assert store.done == {(5, "original", 0), (5, "safe", 0)}
        assert store.append([rec(5, "original", 0), rec(3, "original", 1)]) == 1
    header, records = load_results(tmp_path)
    assert header["config"] == CONFIG
    assert [(r["prompt_id"], r["system"], r["image_index"]) for r in records] == [
        (5, "original", 0),
        (5, "safe", 0),
        (3, "original", 1),
    ]


def test_partial_last_line_is_ignored_then_cut(tmp_path):
    with open_store(tmp_path) as store:
        store.append([rec(5, "original", 0), rec(5, "original", 1)])
    path = shard_path(tmp_path, 0, 1)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"kind":"image","prompt_id":3,"sys')  # a write cut short by kill -9
    _, records = load_results(tmp_path)
    assert len(records) == 2
    with open_store(tmp_path) as store:
        assert path.read_bytes() == whole  # the fragment is gone before anything new is appended
        store.append([rec(3, "original", 0)])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_changed_configuration_is_refused_with_the_difference(tmp_path):
    with open_store(tmp_path) as store:
        store.append([rec(5, "original", 0)])
    changed = json.loads(json.dumps(CONFIG))
    changed["protocol"]["guidance_scale"] = 5.0
    with pytest.raises(ConfigMismatchError, match=r"protocol.guidance_scale: 7.5 -> 5.0") as err:
        open_store(tmp_path, changed).open()
    assert "--out" in str(err.value)
    # another process count is fine: a new shard, the same configuration
    with open_store(tmp_path, rank=1, world=2) as store:
        assert (5, "original", 0) in store.done


def test_a_second_writer_on_the_same_shard_is_refused(tmp_path):
    with open_store(tmp_path):
        with pytest.raises(RuntimeError, match="another run is writing"):
            open_store(tmp_path).open()


def test_merge_is_deterministic_whatever_the_sharding(tmp_path):
    everything = [rec(pid, s, k) for pid in (5, 3, 9) for s in ("original", "safe") for k in range(2)]
    one = tmp_path / "one"
    with open_store(one) as store:
        store.append(everything)
    two = tmp_path / "two"
    with open_store(two, rank=0, world=2) as a, open_store(two, rank=1, world=2) as b:
        for i, r in enumerate(reversed(everything)):  # any order, any split
            (a if i % 3 else b).append([r])
    merge_results(one)
    merge_results(two)
    assert (one / "results.jsonl").read_bytes() == (two / "results.jsonl").read_bytes()
    _, records = load_results(two)
    assert [(r["prompt_id"], r["system"], r["image_index"]) for r in records][:3] == [
        (5, "original", 0),
        (5, "original", 1),
        (5, "safe", 0),
    ]


def test_foreign_files_are_rejected(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "shard-000-of-001.jsonl").write_text('{"kind":"image","prompt_id":1}\n')
    with pytest.raises(ValueError, match="header"):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "empty")


def test_a_corrupt_middle_line_names_the_file_the_line_and_the_fix(tmp_path):
    with open_store(tmp_path) as store:
        store.append([rec(5, "original", 0), rec(5, "original", 1), rec(3, "original", 0)])
    path = shard_path(tmp_path, 0, 1)
    lines = path.read_bytes().split(b"\n")
    lines[2] = b'{"kind":"image","prompt_id":5,"system":"orig\x00inal'  # line 3 (header is line 1): garbage
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CorruptFileError) as err:
        open_store(tmp_path).open()
    message = str(err.value)
    assert str(path) in message and "line 3" in message and "sed -i '3d'" in message
    # following the advice recovers: the record of that line is simply missing and gets redone
    del lines[2]
    path.write_bytes(b"\n".join(lines))
    with open_store(tmp_path) as store:
        assert store.done == {(5, "original", 0), (3, "original", 0)}


def test_the_guard_compares_identity_not_the_recorded_paths(tmp_path):
    """Two configurations that differ only in where a model lies share an identity: the resume is accepted."""
    identity = {"base": "local:abc", "systems": [{"name": "original"}]}
    first = {"base": "/home/a/.cache/tiny/sd", "systems": [{"name": "original"}]}
    moved = {"base": "/home/b/cache/tiny/sd", "systems": [{"name": "original"}]}
    fp = config_fingerprint(identity)
    with ResultStore(tmp_path, first, fp, identity=identity) as store:
        store.append([rec(5, "original", 0)])
    with ResultStore(tmp_path, moved, fp, identity=identity) as store:
        assert store.done == {(5, "original", 0)}
    other = {"base": "local:def", "systems": [{"name": "original"}]}
    with pytest.raises(ConfigMismatchError, match="base: 'local:abc' -> 'local:def'"):
        ResultStore(tmp_path, moved, config_fingerprint(other), identity=other).open()
