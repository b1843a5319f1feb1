import pytest

from saferclip_diffusers.evaluation.attack_store import (
    AttackConfigMismatchError,
    AttackStore,
    load_attack_results,
)


def test_resume_skips_done_and_repairs_torn_tail(tmp_path):
    rec = {
        "kind": "image",
        "target_id": 1,
        "system": "safe",
        "attack": "",
        "variant": "pre",
        "image_index": 0,
    }
    with AttackStore(tmp_path, {"a": 1}, "fp") as store:
        assert store.append([rec, rec]) == 1
    shard = next((tmp_path / "attack-shards").glob("*.jsonl"))
    with open(shard, "a") as fh:
        fh.write('{"kind": "image", "target_id": 2')  # a write cut by kill -9
    with AttackStore(tmp_path, {"a": 1}, "fp") as store:
        assert store.get(rec) == rec  # the record read back after the restart, whole
        assert store.get({**rec, "target_id": 2}) is None  # the torn line is not a record
        assert store.append([{**rec, "target_id": 2}]) == 1
    _, records = load_attack_results(tmp_path)
    assert [r["target_id"] for r in records] == [1, 2]


def test_changed_config_is_refused_with_differences(tmp_path):
    with AttackStore(tmp_path, {"protocol": {"steps": 2}}, "fp1"):
        pass
    with pytest.raises(AttackConfigMismatchError, match="protocol.steps"):
        with AttackStore(tmp_path, {"protocol": {"steps": 3}}, "fp2"):
            pass


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    with AttackStore(tmp_path, {"a": 1}, "fp") as store:
        store.append([{"kind": "refused", "target_id": 1, "reason": "x"}])
    shard = next((tmp_path / "attack-shards").glob("*.jsonl"))
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        load_attack_results(tmp_path)
