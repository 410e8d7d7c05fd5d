"""Prioritized replay: the sum tree, the importance weights, and the memory that uses them."""

from __future__ import annotations

import numpy as np
import pytest

from atari_rl.priorities import SumTree, importance_weights
from atari_rl.replay import PRIORITY_FLOOR, ReplayMemory
from tests.test_replay import frame_id, synthetic_frame, synthetic_step


def test_the_tree_sums_its_leaves_after_repeated_and_overlapping_sets():
    rng = np.random.default_rng(0)
    tree = SumTree(37)  # not a power of two: 64 leaves, 27 of them padding
    values = np.zeros(37)
    for _ in range(200):
        index = rng.integers(0, 37, rng.integers(1, 9))
        new = rng.random(len(index)) * 10
        tree.set(index, new)
        values[index] = new  # numpy takes the last of repeated indices, as the tree must
        assert tree.total == pytest.approx(values.sum(), rel=1e-12)
    np.testing.assert_array_equal(tree.values(), values)
    rebuilt = SumTree(37)
    rebuilt.load(values)
    np.testing.assert_array_equal(rebuilt._tree, tree._tree)


def test_find_returns_the_leaf_whose_share_of_the_total_holds_the_mass():
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 0.0, 3.0, 2.0, 0.0]))
    # cumulative: leaf 0 holds [0, 1), leaf 1 nothing, leaf 2 [1, 4), leaf 3 [4, 6)
    masses = np.array([0.0, 0.5, 0.999, 1.0, 3.99, 4.0, 5.999])
    np.testing.assert_array_equal(tree.find(masses), [0, 0, 0, 2, 2, 3, 3])
    rng = np.random.default_rng(1)
    counts = np.bincount(tree.find(rng.random(60_000) * tree.total), minlength=5)
    np.testing.assert_allclose(counts / counts.sum(), [1 / 6, 0, 0.5, 1 / 3, 0], atol=0.01)


def test_the_tree_refuses_negative_or_non_finite_values():
    tree = SumTree(4)
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="finite and non-negative"):
            tree.set(np.array([1]), np.array([bad]))


def test_importance_weights_match_a_hand_computation():
    p = np.array([0.5, 0.25, 0.25])
    # (N * P) ** -beta with N = 4: [2, 1, 1] ** -beta, divided by the largest
    np.testing.assert_allclose(importance_weights(p, 4, 1.0), [0.5, 1.0, 1.0])
    np.testing.assert_allclose(importance_weights(p, 4, 0.5), [0.5 ** 0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(importance_weights(p, 4, 0.0), [1.0, 1.0, 1.0])
    assert importance_weights(p, 4, 1.0).dtype == np.float32


def filled_memory(frames: int, slots: int, exponent: float = 1.0, seed: int = 0
                  ) -> ReplayMemory:
    """One env of synthetic frames (frame t shows t), one long episode."""
    memory = ReplayMemory(slots, 1, seed=seed, priority_exponent=exponent)
    memory.observe_reset(synthetic_frame(0)[None, None])
    for t in range(1, frames):
        memory.observe(synthetic_step(synthetic_frame(t), action=t % 4, reward=float(t)))
    return memory


def drawn_frames(memory: ReplayMemory, batches: int, size: int = 32) -> np.ndarray:
    """The frame each drawn transition leads to."""
    return np.concatenate([memory.draw(size).k for _ in range(batches)])


def test_new_transitions_are_drawn_uniformly_until_priorities_are_reported():
    memory = filled_memory(60, 100)
    batch = memory.sample(32, priority_weight=1.0)
    np.testing.assert_array_equal(batch.weights, np.ones(32, np.float32))
    counts = np.bincount(drawn_frames(memory, 300), minlength=60)
    # frame 0 starts the episode (no transition leads to it); stacks before frame 4 repeat
    # it, so every k in 1..59 can be drawn, each with probability 1/59
    assert counts[0] == 0 and (counts[1:] > 0).all()
    expected = 300 * 32 / 59
    assert ((counts[1:] - expected) ** 2 / expected).sum() < 110  # chi-square, 58 dof, p 0.9999


def test_a_transition_is_drawn_in_proportion_to_its_priority_and_weighted_back():
    memory = filled_memory(60, 100, exponent=0.5)
    everyone = memory.draw(59)  # stratified over 59 equal priorities: each one once
    assert sorted(everyone.k.tolist()) == list(range(1, 60))
    errors = np.full(59, 1.0)
    errors[everyone.k == 30] = 99.0  # priority (99 + floor) ** 0.5 against 1 for the others
    memory.update_priorities(everyone, errors - PRIORITY_FLOOR)
    share = 99 ** 0.5 / (99 ** 0.5 + 58)
    drawn = drawn_frames(memory, 400)
    assert np.mean(drawn == 30) == pytest.approx(share, abs=0.01)
    batch = memory.sample(64, priority_weight=1.0)
    # the often drawn one counts less: (N P) ** -1, relative to the least probable's
    heavy = batch.weights[batch.draw.k == 30]
    light = batch.weights[batch.draw.k != 30]
    assert len(heavy) and len(light)
    np.testing.assert_allclose(heavy, 1 / 99 ** 0.5, rtol=1e-5)
    np.testing.assert_array_equal(light, 1.0)
    # a new transition gets the largest priority reported so far
    memory.observe(synthetic_step(synthetic_frame(60)))
    assert memory._tree.get(np.array([60]))[0] == pytest.approx(99 ** 0.5)


def test_prioritized_samples_are_the_stored_transitions_as_the_ring_wraps():
    memory = filled_memory(1000, 120, exponent=0.6, seed=3)
    rng = np.random.default_rng(3)
    for _ in range(20):
        batch = memory.sample(32, priority_weight=0.4)
        k = batch.draw.k
        assert ((k >= 1000 - 120 + 4) & (k < 1000)).all()  # whole stacks in memory
        for i in range(32):
            assert [frame_id(f) for f in batch.obs[i]] == list(range(k[i] - 4, k[i]))
            assert [frame_id(f) for f in batch.next_obs[i]] == list(range(k[i] - 3, k[i] + 1))
            assert batch.actions[i] == (k[i]) % 4 and batch.returns[i] == k[i]
        memory.update_priorities(batch.draw, rng.random(32) * 5)


def test_priorities_of_transitions_evicted_since_their_draw_are_not_set():
    memory = filled_memory(120, 100)
    draw = memory.draw(8)
    for t in range(120, 220):  # the whole ring is written again
        memory.observe(synthetic_step(synthetic_frame(t)))
    before = memory._tree.values().copy()
    memory.update_priorities(draw, np.full(8, 50.0))
    np.testing.assert_array_equal(memory._tree.values(), before)
    assert memory._max_priority == 1.0


def test_a_saved_prioritized_memory_draws_what_the_original_draws(tmp_path):
    memory = filled_memory(300, 120, exponent=0.5, seed=5)
    rng = np.random.default_rng(5)
    for _ in range(5):
        batch = memory.sample(16)
        memory.update_priorities(batch.draw, rng.random(16) * 3)
    memory.save(tmp_path / "replay.npz")
    restored = ReplayMemory.load(tmp_path / "replay.npz")
    assert restored.priority_exponent == 0.5
    np.testing.assert_array_equal(restored._tree._tree, memory._tree._tree)
    for t in range(300, 310):
        for m in (memory, restored):
            m.observe(synthetic_step(synthetic_frame(t)))
        a, b = memory.sample(16, 0.7), restored.sample(16, 0.7)
        np.testing.assert_array_equal(a.draw.k, b.draw.k)
        np.testing.assert_array_equal(a.weights, b.weights)
        errors = rng.random(16)
        memory.update_priorities(a.draw, errors)
        restored.update_priorities(b.draw, errors)


def test_a_uniform_memory_reads_back_as_uniform_and_refuses_priorities():
    memory = ReplayMemory(120, 1, seed=0)
    memory.observe_reset(synthetic_frame(0)[None, None])
    for t in range(1, 20):
        memory.observe(synthetic_step(synthetic_frame(t)))
    state = memory.state_dict()
    assert "priorities" not in state
    batch = ReplayMemory.from_state_dict(state).sample(4)
    assert batch.weights is None and batch.draw is None
    with pytest.raises(ValueError, match="prioritized"):
        memory.update_priorities(memory.draw(4), np.ones(4))


def test_the_tree_is_counted_in_the_memory_estimate():
    uniform = ReplayMemory.bytes_estimate(1_000_000, 8)
    prioritized = ReplayMemory.bytes_estimate(1_000_000, 8, prioritized=True)
    assert prioritized - uniform == 2 * 2**20 * 8  # 16 bytes a transition, padded to 2^20
