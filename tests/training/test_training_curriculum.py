"""Curriculum buckets (tertiles of the target similarity) and the easy -> medium -> hard schedule."""

import numpy as np
import pytest

from saferclip_diffusers.training.curriculum import CurriculumSchedule, difficulty_buckets


def test_tertile_buckets_high_similarity_is_easy():
    sim = np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.6, 0.7, 0.3, 0.4])
    b = difficulty_buckets(sim)
    assert sorted(np.flatnonzero(b == 0)) == [0, 3, 6]  # 0.9, 0.8, 0.7
    assert sorted(np.flatnonzero(b == 1)) == [2, 5, 8]  # 0.5, 0.6, 0.4
    assert sorted(np.flatnonzero(b == 2)) == [1, 4, 7]  # 0.1, 0.2, 0.3


def test_custom_quantiles_and_two_buckets():
    sim = np.linspace(0, 1, 10)
    b = difficulty_buckets(sim, [0.2])
    assert (b == 0).sum() == 2 and set(np.flatnonzero(b == 0)) == {8, 9}


def test_schedule_opens_buckets_epoch_by_epoch():
    buckets = np.array([0, 1, 2, 0, 1, 2])
    stages = [["easy"], ["easy", "medium"], ["easy", "medium", "hard"]]
    s = CurriculumSchedule(buckets, stages, 3)
    assert s.active(1).tolist() == [0, 3]
    assert s.active(2).tolist() == [0, 1, 3, 4]
    assert s.active(3).tolist() == list(range(6))
    assert s.active(9).tolist() == list(range(6))  # past the last stage: everything
    off = CurriculumSchedule(buckets, stages, 3, enabled=False)
    assert off.active(1).tolist() == list(range(6))


def test_unknown_bucket_name_is_an_error():
    with pytest.raises(ValueError, match="unknown bucket"):
        CurriculumSchedule(np.zeros(3, dtype=int), [["simple"]], 3)
