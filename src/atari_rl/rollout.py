"""On-policy rollout storage, shared by A2C and PPO.

Every env plays with the current policy until an update is due; the rows [T, E] are then
handed over at once. The reset step that ale-py's NEXT_STEP autoreset (or our FIRE after a
life loss) inserts after an episode end is kept as a row, since its observation is where
the next episode starts, but masked out: its action was ignored, so it is no transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atari_rl.envs import Step

EPISODE = "episode"  # n_steps of whole-episode (Monte Carlo) rollouts


@dataclass
class RolloutBatch:
    """Rows [T, E] of a rollout and which of them are learned from."""

    obs: np.ndarray  # uint8 [T, E, 4, 84, 84]: the stack each action was taken in
    actions: np.ndarray  # int64 [T, E]
    rewards: np.ndarray  # float32 [T, E], clipped
    terminated: np.ndarray  # bool [T, E]
    truncated: np.ndarray  # bool [T, E]: truncation, or the end of a capped rollout
    mask: np.ndarray  # bool [T, E]: real transitions not learned from before
    # per-step values an algorithm kept when acting (PPO: log-probabilities and values)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Rollout:
    """Collects steps until an update is due, for N-step and for whole-episode rollouts.

    In episode mode an env whose episode ended keeps playing while the others finish
    theirs; the steps of its next episode stay here for the following update (they were
    chosen by a policy one update older). Each row is learned from exactly once.
    """

    def __init__(self, num_envs: int, n_steps: int | str, max_rows: int):
        self.num_envs = num_envs
        self.n_steps = n_steps
        self.max_rows = n_steps if n_steps != EPISODE else max_rows
        self._rows: list[tuple[np.ndarray, ...]] = []
        self._extra_names: tuple[str, ...] = ()
        self._consumed = np.zeros(num_envs, dtype=np.int64)  # rows below are learned already
        self._episode_ended = np.zeros(num_envs, dtype=bool)  # since the last update

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, obs: np.ndarray, step: Step, **extras: np.ndarray) -> None:
        """One step of every env; `extras` are [E] arrays kept beside it (the same names
        at every step)."""
        self._extra_names = tuple(extras)
        self._rows.append((obs, step.actions, step.reward, step.terminated, step.truncated,
                           step.first, *extras.values()))
        self._episode_ended |= step.done & ~step.first

    def ready(self) -> bool:
        if len(self._rows) >= self.max_rows:
            return True
        return self.n_steps == EPISODE and bool(self._episode_ended.all())

    def take(self) -> RolloutBatch:
        obs, actions, rewards, terminated, truncated, first, *extras = (
            np.stack(c) for c in zip(*self._rows, strict=True))
        rows = len(self._rows)
        cut = np.full(self.num_envs, rows)
        if self.n_steps == EPISODE and rows < self.max_rows:
            ended = (terminated | truncated) & ~first
            cut = rows - np.argmax(ended[::-1], axis=0)  # one past each env's last episode end
        index = np.arange(rows)[:, None]
        mask = (index >= self._consumed) & (index < cut) & ~first
        if rows >= self.max_rows and self.n_steps == EPISODE:
            truncated = truncated.copy()
            truncated[-1] |= ~terminated[-1]  # a capped episode bootstraps like a truncation
        keep_from = int(cut.min())
        self._rows = self._rows[keep_from:]
        self._consumed = cut - keep_from
        self._episode_ended[:] = False
        for t, row in enumerate(self._rows):
            self._episode_ended |= (row[3] | row[4]) & ~row[5] & (t >= self._consumed)
        return RolloutBatch(obs, actions, rewards, terminated, truncated, mask,
                            dict(zip(self._extra_names, extras, strict=True)))
