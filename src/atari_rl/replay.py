"""Replay memory of Double DQN: each frame stored once, compressed; stacks rebuilt when sampled.

Why it is built this way:

- A transition kept as two stacks of four 84x84 frames is 56 KB, so 1 M of them need 56 GB.
  Consecutive transitions share all but one frame, so every frame is stored once and the
  stacks of s and s' are rebuilt at sampling time, repeating the episode's first frame
  where a stack would reach past it, exactly as `AtariPipeline` builds them.
- Frames are compressed with zstd (level 3). On 16,000 real Breakout frames it took 285
  bytes per frame, 5 us to compress and 3 us to decompress; zlib level 1 took 348 bytes,
  15 and 8 us; lz4 400 bytes, 2 and 1 us. zstd is the smallest and nearly as fast as lz4
  (benchmarks/replay_memory.py --codec compares them inside the memory).
- Each env of the vector env has its own ring, so its frames are consecutive in time and a
  stack is a run of neighbouring indices. Indices are absolute step counts (slot = index
  % slots), which makes "still in memory" a single comparison against the ring's oldest.
- Memory is a fixed budget, allocated up front: per env, a byte arena of `frame_budget`
  bytes per slot, written as a circular log. A frame that needs room evicts the oldest
  frames, so a game whose frames compress worse keeps fewer transitions instead of using
  more memory, and `bytes_estimate` holds as an upper bound for the whole run. The budget
  is slack on purpose: frames that vary in size rarely evict before the slot ring does,
  and a long run, whose log sweeps the whole arena, settles at the estimate.
- Prioritized replay (`priority_exponent`, off by default) adds a sum tree over the slots
  (`priorities.py`): 16 bytes a transition more, and sampling by priority instead of
  uniformly, with the importance weights that undo its bias.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from os import PathLike
from typing import Any, NamedTuple

import numpy as np
import psutil

from atari_rl.envs import FRAME_SHAPE, Step
from atari_rl.priorities import SumTree, importance_weights

FRAME_BYTES = FRAME_SHAPE[0] * FRAME_SHAPE[1]
# 1.8x zstd's mean on Breakout; 1 M transitions then need 0.57 GB in all.
FRAME_BUDGET = 512
# Memory besides the stored frames: the codec's contexts (zstd's level-3 compressor takes
# 8 MB) and the frames of a batch being sampled, for batches of up to 256.
WORKSPACE_BYTES = 32 * 2**20
# Rejection rounds before sampling enumerates the valid transitions; almost all are valid
# once the memory holds a few episodes, so one round nearly always suffices.
_REJECTION_ROUNDS = 16

# One record per frame slot. The transition that led to a frame is kept in the frame's slot.
_SLOT = np.dtype([
    ("action", np.uint8),
    ("reward", np.float32),
    ("terminated", np.bool_),
    ("truncated", np.bool_),
    ("first", np.bool_),  # starts an episode: no transition leads to this frame
    ("episode_start", np.int64),  # absolute index of the episode's first frame
    ("offset", np.int64),  # where the compressed frame lies in the env's arena
    ("length", np.uint16),  # FRAME_BYTES means stored raw: compression did not help
])
_NOTHING_TO_SAMPLE = "replay memory has no complete transition to sample yet"
_CONFIG = ("capacity", "num_envs", "frame_stack", "n_step", "gamma", "codec", "frame_budget",
           "priority_exponent")
# Added to |TD error| before the exponent, so that no transition's priority becomes 0.
PRIORITY_FLOOR = 1e-6

Codec = tuple[Callable[[bytes], bytes], Callable[[Any], bytes]]


class MemoryBudgetError(ValueError):
    """The configured replay memory does not fit in the memory this machine has free."""


class Draw(NamedTuple):
    """Which transitions a batch holds: the random part of sampling, small and cheap."""

    env: np.ndarray  # int64 [B]
    k: np.ndarray  # int64 [B]: the absolute index of the frame each transition leads to
    steps: np.ndarray  # int64 [B]: its n' <= n steps, fewer where the episode ended
    weights: np.ndarray | None = None  # float32 [B]: importance weights, prioritized only

    def to_lists(self) -> list[list[Any] | None]:
        """JSON-ready, for a checkpoint's metadata."""
        return [None if part is None else part.tolist() for part in self]

    @classmethod
    def from_lists(cls, parts: list[list[Any] | None]) -> Draw:
        env, k, steps, *weights = parts
        return cls(np.array(env, np.int64), np.array(k, np.int64), np.array(steps, np.int64),
                   None if not weights or weights[0] is None
                   else np.array(weights[0], np.float32))


@dataclass(frozen=True)
class Batch:
    """Transitions ready for the Double DQN target: returns + discounts * Q(next_obs)."""

    obs: np.ndarray  # uint8 [B, frame_stack, 84, 84]
    actions: np.ndarray  # int64 [B]
    returns: np.ndarray  # float32 [B]: discounted rewards of the (possibly cut) n-step window
    next_obs: np.ndarray  # uint8 [B, frame_stack, 84, 84]: the stack n' <= n steps later
    discounts: np.ndarray  # float32 [B]: gamma ** n', 0 when the episode terminated
    # Prioritized replay only: the draw, with its importance weights, whose transitions get
    # their new priorities after the update. None: uniform.
    draw: Draw | None = None

    @property
    def weights(self) -> np.ndarray | None:
        """float32 [B] importance weights for the loss; None for a uniform batch."""
        return None if self.draw is None else self.draw.weights


def make_codec(name: str) -> Codec:
    """Compressor and decompressor of one 84x84 frame; lz4 and zstd imported only when used."""
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress
    if name == "lz4":
        import lz4.block

        return (partial(lz4.block.compress, store_size=False),
                partial(lz4.block.decompress, uncompressed_size=FRAME_BYTES))
    if name == "zlib":
        return partial(zlib.compress, level=1), zlib.decompress
    raise ValueError(f"unknown codec '{name}': use zstd, lz4 or zlib")


def min_slots(frame_stack: int, n_step: int, frame_budget: int = FRAME_BUDGET) -> int:
    """Frames each env's ring must hold: one whole transition's (its stack, its n-step
    window and the next stack's new frame) even if none compresses, plus the slot that a
    wrap of the arena can leave unused."""
    needed = frame_stack + n_step + 1
    return max(needed, -(-needed * FRAME_BYTES // frame_budget) + 1)


def check_capacity(capacity: int, num_envs: int, frame_stack: int, n_step: int,
                   frame_budget: int = FRAME_BUDGET) -> None:
    """A capacity too small to sample from: ValueError with one line (a config check, which
    reads no machine state)."""
    least = num_envs * min_slots(frame_stack, n_step, frame_budget)
    if capacity // num_envs * num_envs < least:
        raise ValueError(f"--buffer-size {capacity:,} is too small for {num_envs} envs: use "
                         f"at least {least:,}")


def check_fits(capacity: int, num_envs: int, frame_budget: int = FRAME_BUDGET,
               available: int | None = None, prioritized: bool = False) -> int:
    """Refuse, before any training, a memory the machine cannot hold; returns its bytes."""
    need = ReplayMemory.bytes_estimate(capacity, num_envs, frame_budget, prioritized)
    if available is None:
        available = psutil.virtual_memory().available
    if need > available:
        raise MemoryBudgetError(
            f"replay memory of {capacity:,} transitions needs {need / 1e9:.2f} GB but only "
            f"{available / 1e9:.2f} GB is available: lower --buffer-size"
        )
    return need


class ReplayMemory:
    """Uniform replay of n-step transitions from a vector of Atari envs.

    Feed it what `AtariPipeline` produces: `observe_reset(pipeline.reset())`, then
    `observe(step)` after every `pipeline.step`. `capacity` counts transitions over all envs
    (each env's ring holds capacity // num_envs frames, episode-start frames included).

    With `priority_exponent` alpha, sampling is prioritized: a transition is drawn with
    probability proportional to (|TD error| + PRIORITY_FLOOR) ** alpha, as last reported by
    `update_priorities`, and a new one gets the largest priority reported so far.
    """

    def __init__(self, capacity: int, num_envs: int, frame_stack: int = 4, n_step: int = 1,
                 gamma: float = 0.99, codec: str = "zstd", frame_budget: int = FRAME_BUDGET,
                 seed: int = 0, priority_exponent: float | None = None):
        self.capacity, self.num_envs = capacity, num_envs
        self.frame_stack, self.n_step, self.gamma = frame_stack, n_step, gamma
        self.codec, self.frame_budget = codec, frame_budget
        self.priority_exponent = priority_exponent
        self.slots = capacity // num_envs
        check_capacity(capacity, num_envs, frame_stack, n_step, frame_budget)
        check_fits(capacity, num_envs, frame_budget, prioritized=priority_exponent is not None)
        self._compress, self._decompress = make_codec(codec)
        self._rng = np.random.default_rng(seed)
        # np.zeros maps pages lazily: resident memory grows with use, up to the estimate.
        self._arena = np.zeros((num_envs, self.slots * frame_budget), np.uint8)
        self._meta = np.zeros((num_envs, self.slots), _SLOT)
        self._lo = np.zeros(num_envs, np.int64)  # oldest frame still in memory, per env
        self._head = np.zeros(num_envs, np.int64)  # where the next frame is written
        self._episode_start = np.zeros(num_envs, np.int64)
        self._t = 0  # absolute index of the next frame, the same in every env
        self._stored = 0
        # Prioritized: leaf env * slots + slot holds the priority ** alpha of the transition
        # that led to the frame in that slot (0 for an episode's first frame).
        self._tree = SumTree(num_envs * self.slots) if priority_exponent is not None else None
        self._max_priority = 1.0

    @staticmethod
    def bytes_estimate(capacity: int, num_envs: int, frame_budget: int = FRAME_BUDGET,
                       prioritized: bool = False) -> int:
        """Upper bound on the memory's resident bytes: everything is allocated up front."""
        slots = capacity // num_envs
        tree = SumTree.bytes_for(num_envs * slots) if prioritized else 0
        return num_envs * slots * (frame_budget + _SLOT.itemsize) + tree + WORKSPACE_BYTES

    def __len__(self) -> int:
        """Transitions stored (some of the oldest may lack frames for their stack)."""
        return self._stored

    def observe_reset(self, obs: np.ndarray) -> None:
        """Start an episode in every env from the stacks `AtariPipeline.reset()` returned."""
        everyone = np.ones(self.num_envs, dtype=bool)
        nothing = np.zeros(self.num_envs, dtype=bool)
        self._append(obs[:, -1], everyone, np.zeros(self.num_envs), np.zeros(self.num_envs),
                     nothing, nothing)

    def observe(self, step: Step) -> None:
        """Store one step of every env; rows flagged `first` start a new episode."""
        self._append(step.frame, step.first, step.actions, step.reward, step.terminated,
                     step.truncated)

    def sample(self, batch_size: int, priority_weight: float = 1.0) -> Batch:
        """A batch of the transitions whose frames and n-step window are all in memory:
        uniform, or by priority with importance weights (beta = `priority_weight`)."""
        return self.gather(self.draw(batch_size, priority_weight))

    def draw(self, batch_size: int, priority_weight: float = 1.0) -> Draw:
        """The transitions of a batch, without their frames (`sample`'s first half)."""
        env, k, steps = self._draw(batch_size)
        if self._tree is None:
            return Draw(env, k, steps)
        probabilities = self._tree.get(env * self.slots + k % self.slots) / self._tree.total
        return Draw(env, k, steps, importance_weights(probabilities, self._stored,
                                                      priority_weight))

    def update_priorities(self, draw: Draw, td_errors: np.ndarray) -> None:
        """The new |TD errors| of a drawn batch's transitions. Those evicted since the draw
        (a prefetched batch is one env step old) are skipped, since their slots hold new
        ones, and so are non-finite errors (the cliff detector stops such a run)."""
        if self._tree is None:
            raise ValueError("update_priorities needs a prioritized memory")
        priorities = np.abs(np.asarray(td_errors, np.float64)) + PRIORITY_FLOOR
        here = (draw.k >= self._lo[draw.env]) & np.isfinite(priorities)
        self._tree.set(draw.env[here] * self.slots + draw.k[here] % self.slots,
                       priorities[here] ** self.priority_exponent)
        self._max_priority = max(self._max_priority, float(priorities[here].max(initial=0.0)))

    def gather(self, draw: Draw) -> Batch:
        """The drawn transitions with their stacks decompressed (`sample`'s costly half).

        It only reads the memory, so it can run in another thread while nothing writes.
        """
        env, k, steps = draw.env, draw.k, draw.steps
        meta, n, fs = self._meta, self.n_step, self.frame_stack
        slot = k % self.slots
        start = meta["episode_start"][env, slot][:, None]
        behind = np.arange(fs) - fs
        # s ends at frame k - 1, s' at frame k + steps - 1; neither reaches before `start`.
        obs_idx = np.maximum(start, k[:, None] + behind)
        next_idx = np.maximum(start, (k + steps)[:, None] + behind)
        frames, inverse = self._frames(env, np.concatenate([obs_idx, next_idx], axis=1))
        window = (k[:, None] + np.arange(n)) % self.slots
        weights = self.gamma ** np.arange(n) * (np.arange(n) < steps[:, None])
        returns = (meta["reward"][env[:, None], window] * weights).sum(axis=1)
        terminated = meta["terminated"][env, (k + steps - 1) % self.slots]
        return Batch(
            obs=frames[inverse[:, :fs]],
            actions=meta["action"][env, slot].astype(np.int64),
            returns=returns.astype(np.float32),
            next_obs=frames[inverse[:, fs:]],
            discounts=np.where(terminated, 0.0, self.gamma ** steps).astype(np.float32),
            draw=draw if draw.weights is not None else None,
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays (views, not copies) and a JSON header: loadable without pickle."""
        header = {name: getattr(self, name) for name in _CONFIG}
        header |= {"t": self._t, "stored": self._stored, "rng": self._rng.bit_generator.state,
                   "max_priority": self._max_priority}
        state = {"header": np.array(json.dumps(header)), "arena": self._arena,
                 "meta": self._meta, "lo": self._lo, "head": self._head,
                 "episode_start": self._episode_start}
        if self._tree is not None:
            state["priorities"] = self._tree.values()
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> ReplayMemory:
        """Takes the arrays over without copying them: a restore needs no second arena."""
        header = json.loads(str(state["header"]))
        # priority_exponent is missing from memories saved before prioritized replay
        memory = cls(**{name: header[name] for name in _CONFIG if name in header})
        for name in ("arena", "meta", "lo", "head", "episode_start"):
            mine, saved = getattr(memory, f"_{name}"), state[name]
            if saved.shape != mine.shape or saved.dtype != mine.dtype:
                raise ValueError(f"saved replay memory: '{name}' does not match its header")
            setattr(memory, f"_{name}", saved)
        memory._t, memory._stored = header["t"], header["stored"]
        memory._rng.bit_generator.state = header["rng"]
        if memory._tree is not None:
            memory._tree.load(np.asarray(state["priorities"], np.float64))
            memory._max_priority = header["max_priority"]
        return memory

    def save(self, path: str | PathLike) -> None:
        with open(path, "wb") as file:
            np.savez(file, **self.state_dict())

    @classmethod
    def load(cls, path: str | PathLike) -> ReplayMemory:
        with np.load(path, allow_pickle=False) as saved:
            return cls.from_state_dict(saved)

    def _append(self, frames: np.ndarray, first: np.ndarray, actions: np.ndarray,
                rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        t, slot = self._t, self._t % self.slots
        for env in range(self.num_envs):
            if t - self._lo[env] == self.slots:
                self._evict(env)
            self._write_frame(env, slot, frames[env])
        self._episode_start[first] = t
        record = self._meta[:, slot]
        record["action"] = np.where(first, 0, actions)
        record["reward"] = np.where(first, 0.0, rewards)
        record["terminated"] = terminated & ~first
        record["truncated"] = truncated & ~first
        record["first"] = first
        record["episode_start"] = self._episode_start
        if self._tree is not None:
            self._tree.set(np.arange(self.num_envs) * self.slots + slot,
                           np.where(first, 0.0, self._max_priority ** self.priority_exponent))
        self._stored += int(np.count_nonzero(~first))
        self._t += 1

    def _write_frame(self, env: int, slot: int, frame: np.ndarray) -> None:
        """Append to the env's circular byte log, evicting the oldest frames in the way."""
        raw = frame.tobytes()
        data = self._compress(raw)
        if len(data) >= FRAME_BYTES:
            data = raw
        size, head = len(data), int(self._head[env])
        offsets = self._meta["offset"][env]
        if head + size > self._arena.shape[1]:  # no room before the end: wrap to the start
            while self._lo[env] < self._t and offsets[self._lo[env] % self.slots] >= head:
                self._evict(env)
            head = 0
        while (self._lo[env] < self._t
               and head <= offsets[self._lo[env] % self.slots] < head + size):
            self._evict(env)
        self._arena[env, head:head + size] = np.frombuffer(data, np.uint8)
        offsets[slot] = head
        self._meta["length"][env, slot] = size
        self._head[env] = head + size

    def _evict(self, env: int) -> None:
        if not self._meta["first"][env, self._lo[env] % self.slots]:
            self._stored -= 1
        self._lo[env] += 1

    def _draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rejection sampling: proposals (`_propose`), keeping the valid ones; a proposal
        outside the ring's frames (a slot never written, by rounding) is not valid either."""
        if not self._stored:
            raise ValueError(_NOTHING_TO_SAMPLE)
        low = max(0, self._t - self.slots)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        need = batch_size
        for _ in range(_REJECTION_ROUNDS):
            env, k = self._propose(need, low)
            valid, steps = self._check(env, k)
            chosen = np.flatnonzero(valid & (k >= low))[:need]
            parts.append((env[chosen], k[chosen], steps[chosen]))
            need -= len(chosen)
            if need == 0:
                break
        else:  # few valid transitions: pick among all of them (by priority, if prioritized)
            env, k = np.divmod(np.arange(self.num_envs * (self._t - low)), self._t - low)
            valid, steps = self._check(env, k + low)
            if not valid.any():
                raise ValueError(_NOTHING_TO_SAMPLE)
            candidates = np.flatnonzero(valid)
            p = None
            if self._tree is not None:
                weight = self._tree.get(env[candidates] * self.slots
                                        + (k[candidates] + low) % self.slots)
                p = weight / weight.sum() if weight.sum() > 0 else None
            chosen = self._rng.choice(candidates, need, p=p)
            parts.append((env[chosen], k[chosen] + low, steps[chosen]))
        env, k, steps = (np.concatenate(part) for part in zip(*parts, strict=True))
        return env, k, steps

    def _propose(self, need: int, low: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate transitions (env, k). Uniform: twice `need` over the ring, since a few
        are rejected (the newest frames, whose n-step window is not complete, and the
        oldest, whose stack is partly evicted). Prioritized: stratified, one in each of
        `need` equal slices of the total priority, those rejected drawn again next round.
        Slots of priority 0 (episode starts, slots never written) are rejected as invalid."""
        if self._tree is None:
            return (self._rng.integers(0, self.num_envs, 2 * need),
                    self._rng.integers(low, self._t, 2 * need))
        mass = (np.arange(need) + self._rng.random(need)) / need * self._tree.total
        env, slot = np.divmod(self._tree.find(mass), self.slots)
        return env, self._t - 1 - (self._t - 1 - slot) % self.slots  # newest frame in slot

    def _check(self, env: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which transitions (leading to frame k of env) can be sampled, and their n'."""
        meta, n = self._meta, self.n_step
        start = meta["episode_start"][env, k % self.slots]
        valid = np.maximum(start, k - self.frame_stack) >= self._lo[env]
        window = k[:, None] + np.arange(n)
        records = meta[env[:, None], window % self.slots]
        inside = window < self._t
        ended = (records["terminated"] | records["truncated"]) & inside
        steps = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, n)
        # The window must lie in one episode (which also rules out k itself being a first
        # frame) and in the frames written so far, up to its end.
        complete = (inside & ~records["first"]) | (np.arange(n) >= steps[:, None])
        return valid & complete.all(axis=1), steps

    def _frames(self, env: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decompress each needed frame once; `inverse` maps idx to rows of the frames."""
        unique, inverse = np.unique(env[:, None] * self.slots + idx % self.slots,
                                    return_inverse=True)
        envs, slots = np.divmod(unique, self.slots)
        records = self._meta[envs, slots]
        # Each frame is written straight into its row: joining the decompressed bytes
        # first copied them all once more, which cost as much as decompressing them.
        frames = np.empty((len(unique), *FRAME_SHAPE), np.uint8)
        flat = memoryview(frames.reshape(-1))
        for start, e, offset, length in zip(range(0, frames.size, FRAME_BYTES), envs.tolist(),
                                            records["offset"].tolist(),
                                            records["length"].tolist(), strict=True):
            flat[start:start + FRAME_BYTES] = self._decode(self._arena[e, offset:offset + length])
        return frames, inverse.reshape(idx.shape)

    def _decode(self, data: np.ndarray) -> bytes | np.ndarray:
        return data if len(data) == FRAME_BYTES else self._decompress(data)
