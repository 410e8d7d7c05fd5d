"""Tiny tasks that speak the pipeline's language (uint8 84x84 stacks, `Step`), so that an
algorithm can be shown to learn in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atari_rl.checkpoints import load_tensors
from atari_rl.envs import Step
from atari_rl.networks import ActorCritic


class CueTask:
    """The left or the right half of the screen is lit; pressing the action of that side
    (0 for left, 1 for right) earns 1. Episodes last `length` steps and follow the
    pipeline's conventions: the step after an episode ends is a reset step (`first`),
    with no transition."""

    num_actions = 2

    def __init__(self, num_envs: int, length: int = 4, seed: int = 0):
        self.num_envs = num_envs
        self.length = length
        self._rng = np.random.default_rng(seed)
        self._cue = np.zeros(num_envs, dtype=np.int64)
        self._time = np.zeros(num_envs, dtype=np.int64)
        self._pending_reset = np.zeros(num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._cue = self._rng.integers(0, 2, self.num_envs)
        self._time[:] = 0
        self._pending_reset[:] = False
        return self._obs()

    def step(self, actions: np.ndarray) -> Step:
        first = self._pending_reset.copy()
        reward = np.where(first, 0.0, (actions == self._cue).astype(np.float32))
        self._time = np.where(first, 0, self._time + 1)
        terminated = ~first & (self._time >= self.length)
        self._cue = self._rng.integers(0, 2, self.num_envs)
        self._pending_reset = terminated.copy()
        return Step(obs=self._obs(), reward=reward.astype(np.float32),
                    raw_reward=reward.astype(np.float32), terminated=terminated,
                    truncated=np.zeros(self.num_envs, dtype=bool), first=first,
                    actions=np.asarray(actions, dtype=np.int64))

    def _obs(self) -> np.ndarray:
        return np.stack([cue_screen(int(c)) for c in self._cue])

    def close(self) -> None:
        pass


def cue_screen(side: int) -> np.ndarray:
    """A stack of four 84x84 frames with the left (0) or right (1) half lit."""
    screen = np.zeros((4, 84, 84), dtype=np.uint8)
    screen[:, :, 42 * side:42 * (side + 1)] = 255
    return screen


def assert_learned_the_cue(policy_file: Path) -> None:
    """The trained actor-critic presses the lit side's action with probability > 0.9."""
    network = ActorCritic(CueTask.num_actions)
    network.load_state_dict(load_tensors(policy_file))
    screens = np.stack([cue_screen(0), cue_screen(1)])
    with torch.no_grad():
        probs = torch.softmax(network(torch.from_numpy(screens))[0], 1)
    assert probs[0, 0] > 0.9 and probs[1, 1] > 0.9, probs
