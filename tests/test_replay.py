"""The replay memory must give back, frame for frame, the transitions the pipeline produced."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from atari_rl.envs import AtariPipeline, EnvConfig, Step
from atari_rl.replay import FRAME_BYTES, Batch, MemoryBudgetError, ReplayMemory, check_fits

NUM_ENVS = 2
SLOTS = 120  # frames per env: the recording below wraps each ring 10 times
GAMMA = 0.99
# obs, action, reward, discount, next_obs: compared by content, frame for frame
Transition = tuple[bytes, int, float, float, bytes]


@dataclass
class Recording:
    """A random-policy Breakout run; frame t of every env is the newest frame of stacks[t]."""

    reset_obs: np.ndarray
    steps: list[Step]
    stacks: np.ndarray  # [T, E, 4, 84, 84]: the pipeline's stack after frame t
    episode_start: np.ndarray  # [T, E]: index of the first frame of frame t's episode

    def transition(self, env: int, k: int) -> Transition:
        """The transition that led to frame k, with the 1-step return and discount."""
        step = self.steps[k - 1]
        discount = 0.0 if step.terminated[env] else GAMMA
        return (self.stacks[k - 1, env].tobytes(), int(step.actions[env]),
                float(step.reward[env]), float(np.float32(discount)),
                self.stacks[k, env].tobytes())

    def sampleable(self, written: int, slots: int) -> set[Transition]:
        """1-step transitions whose stack frames are among the last `slots` of `written`."""
        return {
            self.transition(env, k)
            for env in range(NUM_ENVS)
            for k in range(1, written)
            if not self.steps[k - 1].first[env]
            and max(self.episode_start[k, env], k - 4) >= written - slots
        }


@pytest.fixture(scope="module")
def recording() -> Recording:
    pipeline = AtariPipeline(EnvConfig(num_envs=NUM_ENVS, num_threads=1, seed=3))
    rng = np.random.default_rng(3)
    reset_obs = pipeline.reset()
    steps = [pipeline.step(rng.integers(0, pipeline.num_actions, NUM_ENVS))
             for _ in range(1200)]
    pipeline.close()
    firsts = np.array([np.ones(NUM_ENVS, bool)] + [step.first for step in steps])
    episode_start = np.zeros(firsts.shape, np.int64)
    for t in range(1, len(firsts)):
        episode_start[t] = np.where(firsts[t], t, episode_start[t - 1])
    stacks = np.array([reset_obs] + [step.obs for step in steps])
    return Recording(reset_obs, steps, stacks, episode_start)


def batch_transitions(batch: Batch) -> list[Transition]:
    return [(batch.obs[i].tobytes(), int(batch.actions[i]), float(batch.returns[i]),
             float(batch.discounts[i]), batch.next_obs[i].tobytes())
            for i in range(len(batch.actions))]


def check_batch_is_recorded(batch: Batch, allowed: set[Transition]) -> None:
    # Content, not identity: a few transitions of a run are identical, terminal flag included
    for transition in batch_transitions(batch):
        assert transition in allowed, "sampled a transition that is not (or no longer) in memory"


def test_samples_are_the_recorded_transitions_as_the_rings_wrap(recording: Recording):
    memory = ReplayMemory(NUM_ENVS * SLOTS, NUM_ENVS, gamma=GAMMA, seed=1)
    arrays = [memory._arena, memory._meta]
    allocated = sum(array.nbytes for array in arrays)
    assert allocated <= ReplayMemory.bytes_estimate(NUM_ENVS * SLOTS, NUM_ENVS)
    memory.observe_reset(recording.reset_obs)
    for t, step in enumerate(recording.steps, start=2):
        memory.observe(step)
        if t % 250 == 0:  # mid-run, at varied positions of the rings
            allowed = recording.sampleable(t, SLOTS)
            for _ in range(10):
                check_batch_is_recorded(memory.sample(32), allowed)

    written = len(recording.stacks)
    allowed = recording.sampleable(written, SLOTS)
    seen = set()
    for _ in range(150):
        batch = memory.sample(32)
        check_batch_is_recorded(batch, allowed)
        seen.update(batch_transitions(batch))
    assert seen == allowed, "some transitions in memory are never sampled"
    # The cases that matter are in the data: stacks repeating an episode's first frame,
    # and stacks whose frames lie on both sides of the ring's wrap-around.
    first_frame_repeated = wrapped = False
    for env in range(NUM_ENVS):
        for k in range(written - SLOTS + 4, written):
            if recording.steps[k - 1].first[env]:
                continue
            first_frame_repeated |= recording.episode_start[k, env] > k - 4
            wrapped |= (k - 4) // SLOTS != k // SLOTS
    assert first_frame_repeated and wrapped
    assert [array.nbytes for array in arrays] == [array.nbytes for array in
                                                  (memory._arena, memory._meta)]


def test_frames_that_compress_worse_evict_older_ones(recording: Recording):
    capacity = NUM_ENVS * 500
    memory = ReplayMemory(capacity, NUM_ENVS, gamma=GAMMA, frame_budget=100, seed=2)
    memory.observe_reset(recording.reset_obs)
    for step in recording.steps:
        memory.observe(step)
    # Breakout frames take about 285 bytes: the 100-byte budget holds about a third.
    assert 0.2 * capacity < len(memory) < 0.5 * capacity
    allowed = recording.sampleable(len(recording.stacks), 500)
    for _ in range(50):
        check_batch_is_recorded(memory.sample(32), allowed)


def synthetic_frame(t: int) -> np.ndarray:
    frame = np.full((84, 84), t % 256, np.uint8)
    frame[0, 0] = t // 256
    return frame


def frame_id(frame: np.ndarray) -> int:
    return int(frame[0, 0]) * 256 + int(frame[0, 1])


def synthetic_step(frame: np.ndarray, action: int = 0, reward: float = 0.0,
                   terminated: bool = False, truncated: bool = False,
                   first: bool = False) -> Step:
    """One env's step, as AtariPipeline would report it."""
    reward_array = np.array([reward], np.float32)
    return Step(obs=frame[None, None], reward=reward_array, raw_reward=reward_array,
                terminated=np.array([terminated]), truncated=np.array([truncated]),
                first=np.array([first]), actions=np.array([action]))


def test_frames_of_any_size_come_back_intact_as_the_arena_wraps():
    # Rows of noise make frames compress to anything from 30 bytes to 7 KB, so a frame
    # often needs more room than the one it replaces, at the arena's end too.
    rng = np.random.default_rng(6)
    frames = np.zeros((1000, 84, 84), np.uint8)
    for t, frame in enumerate(frames):
        rows = rng.integers(0, 83)
        frame[1:1 + rows] = rng.integers(0, 256, (rows, 84))
        frame[0, :2] = divmod(t, 256)
    memory = ReplayMemory(200, 1, frame_budget=256, seed=6)
    memory.observe_reset(frames[0][None, None])
    for frame in frames[1:]:
        memory.observe(synthetic_step(frame))
    assert len(memory) < 30  # about 14 frames of 3.5 KB fit in 200 x 256 bytes
    stack = np.arange(4)
    for _ in range(20):
        batch = memory.sample(32)
        for obs, next_obs in zip(batch.obs, batch.next_obs, strict=True):
            k = frame_id(next_obs[-1])
            assert k > len(frames) - 30
            np.testing.assert_array_equal(obs, frames[k - 4 + stack])
            np.testing.assert_array_equal(next_obs, frames[k - 3 + stack])


def test_frames_that_do_not_compress_are_stored_raw_and_come_back_intact():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (12, 84, 84), dtype=np.uint8)  # noise: zstd cannot shrink it
    frames[:, 0, 0], frames[:, 0, 1] = 0, np.arange(12)  # what frame_id reads
    memory = ReplayMemory(20, 1, frame_budget=FRAME_BYTES, seed=7)
    memory.observe_reset(frames[0][None, None])
    for frame in frames[1:]:
        memory.observe(synthetic_step(frame))
    assert (memory.state_dict()["meta"]["length"][0, :12] == FRAME_BYTES).all()
    batch = memory.sample(16)
    stack = np.arange(4)
    for obs, next_obs in zip(batch.obs, batch.next_obs, strict=True):
        k = frame_id(next_obs[-1])
        np.testing.assert_array_equal(obs, frames[np.maximum(k - 4 + stack, 0)])
        np.testing.assert_array_equal(next_obs, frames[np.maximum(k - 3 + stack, 0)])


# One period of a synthetic run, by position: reward, terminated, truncated, first.
# Episode A ends in a terminal, B in a truncation, C is cut short by the next period's A.
PERIOD = [
    (0, False, False, True),
    (1, False, False, False), (2, False, False, False), (4, True, False, False),
    (0, False, False, True),
    (1, False, False, False), (1, False, True, False),
    (0, False, False, True),
    *[(1, False, False, False)] * 7,
]
# n = 3, gamma = 0.5, by the position of the frame the transition leads to:
# frames of s, frames of s', return, discount.
EXPECTED = {
    1: ([0, 0, 0, 0], [0, 1, 2, 3], 1 + 0.5 * 2 + 0.25 * 4, 0.0),
    2: ([0, 0, 0, 1], [0, 1, 2, 3], 2 + 0.5 * 4, 0.0),
    3: ([0, 0, 1, 2], [0, 1, 2, 3], 4, 0.0),
    5: ([4, 4, 4, 4], [4, 4, 5, 6], 1 + 0.5, 0.25),
    6: ([4, 4, 4, 5], [4, 4, 5, 6], 1, 0.5),
    8: ([7, 7, 7, 7], [7, 8, 9, 10], 1.75, 0.125),
    9: ([7, 7, 7, 8], [8, 9, 10, 11], 1.75, 0.125),
    10: ([7, 7, 8, 9], [9, 10, 11, 12], 1.75, 0.125),
    11: ([7, 8, 9, 10], [10, 11, 12, 13], 1.75, 0.125),
    12: ([8, 9, 10, 11], [11, 12, 13, 14], 1.75, 0.125),
}  # 13 and 14 never: their windows run into the next episode


def test_n_step_returns_and_discounts_match_a_hand_computation():
    slots, written = 120, 20 * len(PERIOD) + 10  # ends mid-episode C, windows incomplete
    memory = ReplayMemory(slots, 1, n_step=3, gamma=0.5, seed=4)
    memory.observe_reset(synthetic_frame(0)[None, None])
    for t in range(1, written):
        position = t % len(PERIOD)
        memory.observe(synthetic_step(synthetic_frame(t), position, *PERIOD[position]))

    def absolute(k: int, positions: list[int]) -> list[int]:
        return [k - k % len(PERIOD) + p for p in positions]

    allowed = {k for k in range(written) if k % len(PERIOD) in EXPECTED
               and max(absolute(k, EXPECTED[k % len(PERIOD)][1])) < written
               and min(absolute(k, EXPECTED[k % len(PERIOD)][0])) >= written - slots}
    seen = []
    for _ in range(60):
        batch = memory.sample(32)
        for i in range(32):
            k = frame_id(batch.obs[i, -1]) + 1
            assert k in allowed
            obs_frames, next_frames, ret, discount = EXPECTED[k % len(PERIOD)]
            assert [frame_id(f) for f in batch.obs[i]] == absolute(k, obs_frames)
            assert [frame_id(f) for f in batch.next_obs[i]] == absolute(k, next_frames)
            assert batch.actions[i] == k % len(PERIOD)
            assert batch.returns[i] == ret and batch.discounts[i] == discount
            seen.append(k)
    assert set(seen) == allowed
    # Uniform: chi-square of the counts over 75 transitions is under 117 with p = 0.999.
    counts = np.unique(seen, return_counts=True)[1]
    assert ((counts - counts.mean()) ** 2 / counts.mean()).sum() < 117


def test_saved_memory_restores_and_samples_identically(recording: Recording, tmp_path):
    memory = ReplayMemory(NUM_ENVS * SLOTS, NUM_ENVS, n_step=3, gamma=GAMMA, seed=5)
    memory.observe_reset(recording.reset_obs)
    for step in recording.steps[:700]:
        memory.observe(step)
    memory.save(tmp_path / "replay.npz")
    restored = ReplayMemory.load(tmp_path / "replay.npz")
    for more in (0, 5, 30, 100):  # both go on from the same state, their frames still mixed
        for step in recording.steps[700:700 + more]:
            memory.observe(step)
            restored.observe(step)
        assert len(restored) == len(memory)
        a, b = memory.sample(32), restored.sample(32)
        for field in ("obs", "actions", "returns", "next_obs", "discounts"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_sampling_waits_for_a_complete_transition(recording: Recording):
    memory = ReplayMemory(NUM_ENVS * SLOTS, NUM_ENVS, n_step=3)
    with pytest.raises(ValueError, match="no complete transition"):
        memory.sample(32)
    memory.observe_reset(recording.reset_obs)
    memory.observe(recording.steps[0])
    with pytest.raises(ValueError, match="no complete transition"):
        memory.sample(32)  # one transition stored, but its 3-step window is not
    for step in recording.steps[1:3]:
        memory.observe(step)
    assert memory.sample(32).obs.shape == (32, 4, 84, 84)


def test_a_memory_that_does_not_fit_is_refused_in_one_line():
    assert ReplayMemory.bytes_estimate(1_000_000, 8) < 1e9  # under 1 KB per transition
    assert check_fits(1_000_000, 8, available=10**9) == ReplayMemory.bytes_estimate(
        1_000_000, 8)
    with pytest.raises(MemoryBudgetError) as refused:
        ReplayMemory(10**13, 8)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("replay memory of 10,000,000,000,000 transitions needs")
    assert message.endswith("lower --buffer-size")
