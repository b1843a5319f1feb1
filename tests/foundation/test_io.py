import json
import multiprocessing
import os

import pytest

from saferclip_diffusers import io


def test_atomic_write_json_refuses_nan_and_leaves_old_file(tmp_path):
    path = tmp_path / "r.json"
    io.atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError, match="r.json"):
        io.atomic_write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_read_jsonl_torn_tail_repair_and_refusal(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    with pytest.raises(io.CorruptFileError, match="cut off"):
        io.read_jsonl(path)
    assert io.read_jsonl(path, repair_torn_tail=True) == [{"step": 1}, {"step": 2}]
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    io.append_jsonl(path, {"step": 3})
    assert [r["step"] for r in io.read_jsonl(path)] == [1, 2, 3]


def test_read_jsonl_corrupt_middle_line_names_line(tmp_path):
    path = tmp_path / "shard.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(io.CorruptFileError, match=r"line 2.*remove line 2"):
        io.read_jsonl(path, repair_torn_tail=True)


def test_append_jsonl_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        io.append_jsonl(tmp_path / "x.jsonl", {"v": float("inf")})


def _hold(path, ready, release):
    with io.file_lock(path):
        ready.set()
        release.wait(10)


def test_file_lock_refuses_second_holder_and_frees_on_exit(tmp_path):
    lock = tmp_path / "run" / ".lock"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(lock, ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(io.LockedError, match=f"pid {proc.pid}"):
            with io.file_lock(lock):
                pass
    finally:
        release.set()
        proc.join(10)
    with io.file_lock(lock):  # released by the dead holder
        pass


def test_atomic_dir_marker_and_rebuild_of_incomplete(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "half.bin").write_text("torn")  # left by a non-atomic writer
    calls = []

    def build(d):
        calls.append(d)
        (d / "weights").write_text("ok")

    io.atomic_dir(target, build)
    io.atomic_dir(target, build)  # complete: not rebuilt
    assert len(calls) == 1
    assert sorted(p.name for p in target.iterdir()) == [".complete", "weights"]


def test_atomic_dir_failed_build_leaves_nothing(tmp_path):
    def build(d):
        (d / "x").write_text("1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        io.atomic_dir(tmp_path / "m", build)
    assert os.listdir(tmp_path) == []


def test_export_state(tmp_path):
    assert io.export_state(tmp_path) == "plain"
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert io.export_state(tmp_path) == "incomplete"
    (tmp_path / io.EXPORT_MARKER).write_text("{}")
    assert io.export_state(tmp_path) == "complete"


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * 1024 + 7))
    assert io.sha256_file(path, chunk=1024) == hashlib.sha256(path.read_bytes()).hexdigest()
