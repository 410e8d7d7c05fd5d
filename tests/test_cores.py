"""Free cores: what other processes use is subtracted, our own threads are not."""

from __future__ import annotations

import pytest

from atari_rl import cores
from atari_rl.cores import ThreadGovernor, _Sample, busy_elsewhere, free_cores


def test_busy_elsewhere_leaves_out_our_own_time():
    before = _Sample(wall=0.0, busy=0.0, mine=0.0)
    after = _Sample(wall=10.0, busy=15.0, mine=5.0)  # 1.5 cores busy, 0.5 of them ours
    assert busy_elsewhere(before, after) == pytest.approx(1.0)
    assert busy_elsewhere(before, _Sample(wall=10.0, busy=5.0, mine=5.0)) == 0.0


@pytest.mark.parametrize(("busy", "total", "free"), [
    (0.0, 2, 2), (0.4, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (2.0, 2, 1), (3.0, 16, 13)])
def test_a_core_more_than_half_used_elsewhere_is_taken(busy, total, free):
    assert free_cores(busy, total) == free


def test_the_governor_follows_the_free_cores(monkeypatch):
    samples = iter([_Sample(0.0, 0.0, 0.0), _Sample(10.0, 20.0, 10.0),  # 1 core elsewhere
                    _Sample(20.0, 40.0, 30.0)])  # all ours again
    monkeypatch.setattr(cores, "_sample", lambda: next(samples))
    monkeypatch.setattr(cores, "cores", lambda: 2)
    monkeypatch.setattr(cores.time, "monotonic", lambda: 1e9)  # always time to look again
    applied: list[int] = []
    governor = ThreadGovernor(every_s=5.0, set_threads=applied.append, threads=2)
    assert governor.poll() is None  # the first call takes the starting sample
    assert governor.poll() == 1 and applied == [1]
    assert governor.poll() == 2 and applied == [1, 2]
    assert [threads for _, threads in governor.changes] == [1, 2]


def test_the_governor_looks_only_every_few_seconds(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(cores.time, "monotonic", lambda: now[0])
    calls = []

    def sample() -> _Sample:
        calls.append(now[0])
        return _Sample(now[0], 0.0, 0.0)

    monkeypatch.setattr(cores, "_sample", sample)
    governor = ThreadGovernor(every_s=5.0, threads=2)
    for t in (0.0, 1.0, 4.9, 5.1, 6.0):
        now[0] = t
        governor.poll()
    assert calls == [0.0, 5.1]
