"""The Atari environment pipeline: ale-py's C++ vector env plus the tricks that matter.

`AtariVectorEnv` steps the emulators in C++ threads and already does grayscale, 84x84,
frameskip 4 with max-pooling and no-op starts. What it does not do the way a learner
needs it (measured on ale-py 0.12.1, see ../shared/FACTS.md) is done here:

- A life loss ends the *training* episode while the game goes on. `episodic_life` would
  reset the whole game, so we use `life_loss_info` instead.
- FIRE is pressed after every life loss too, not only after a game reset, because
  Breakout does not relaunch the ball until it is.
- The frame stack of a new episode repeats its first frame instead of starting at zeros.
- The step after an episode ends is a reset step (NEXT_STEP autoreset, or our FIRE after
  a life loss): it is flagged with `first` so that no fake transition reaches a learner.
- Rewards are clipped to their sign for learning, while raw game scores are kept.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv

FIRE = 1
FRAME_SHAPE = (84, 84)
FRAMESKIP = 4

# The main thread gives up its core for a moment before it hands the emulator threads
# their actions. After it has computed for a millisecond or more (acting, learning),
# their next step was slower: in PPO's loop on 2 cores the emulators took 353-360 ms per
# 1,024 agent steps without it and 298-300 ms with it (`python benchmarks/ppo_loop.py
# --compare-yield` measures both); PPO ran 7% faster, A2C 9-15% and Double DQN 12%, and
# beside a busy process it cost nothing (README, "Why the speed-ups stop").
YIELD_BEFORE_STEP = hasattr(os, "sched_yield")


@dataclass(frozen=True)
class EnvConfig:
    """How the games are played; the defaults are the DeepMind Nature settings."""

    game: str = "breakout"
    num_envs: int = 16
    num_threads: int = 0  # emulator threads; 0 lets ale-py use one per core
    seed: int = 0
    noop_max: int = 30
    frame_stack: int = 4
    life_loss_ends_episode: bool = True
    fire_after_life_loss: bool = True  # and after a game reset: False leaves FIRE to the agent
    repeat_first_frame: bool = True
    clip_rewards: bool = True
    sticky_action_prob: float = 0.0
    max_frames_per_game: int = 108_000


@dataclass(frozen=True)
class Episode:
    """A finished game (all lives) or training episode (one life), in raw score."""

    env_id: int
    score: float
    steps: int


@dataclass
class Step:
    """One step of every env.

    Rows where `first` is True are reset steps: `obs` starts a new episode and the row
    carries no transition (its reward is zero and the action was not the agent's).
    """

    obs: np.ndarray  # uint8 [num_envs, frame_stack, 84, 84], oldest frame first
    reward: np.ndarray  # float32, clipped to its sign when the config says so
    raw_reward: np.ndarray  # float32, the game's own reward
    terminated: np.ndarray  # bool: life lost (when life loss ends episodes) or game over
    truncated: np.ndarray  # bool: the frame cap of a game was reached
    first: np.ndarray  # bool: reset step, no transition
    actions: np.ndarray  # int64: the actions the emulator executed (FIRE where forced)
    games: list[Episode] = field(default_factory=list)  # whole games finished
    episodes: list[Episode] = field(default_factory=list)  # training episodes finished

    @property
    def frame(self) -> np.ndarray:
        """The newest frame of each env, for a replay memory that stores frames once."""
        return self.obs[:, -1]

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


def game_id(name: str) -> str:
    """ale-py's ROM id for a game name such as 'Breakout', 'breakout' or 'MsPacman'."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip()).lower().replace("-", "_")
    if snake not in roms.get_all_rom_ids():
        raise ValueError(
            f"unknown game '{name}': use an ALE ROM name such as breakout, pong or ms_pacman"
        )
    return snake


def needs_fire(action_names: list[str]) -> bool:
    """Games whose ball must be launched have FIRE as action 1 (the rule of DeepMind's wrappers)."""
    return len(action_names) >= 3 and action_names[FIRE] == "FIRE"


class Emulator(Protocol):
    """What AtariPipeline needs of ale-py's `AtariVectorEnv`, which `screen.ScreenEmulator`
    also provides, one game at a time with its RGB frames, for videos."""

    action_names: list[str]

    def reset(self, seed: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray, dict[str, Any]]: ...

    def close(self) -> None: ...


class _VectorEmulator(AtariVectorEnv):
    """ale-py's C++ vector env, configured from an EnvConfig."""

    def __init__(self, config: EnvConfig):
        super().__init__(
            game_id(config.game),
            config.num_envs,
            num_threads=config.num_threads,
            stack_num=config.frame_stack,  # its first stacks of an episode are fixed here
            frameskip=FRAMESKIP,
            maxpool=True,
            grayscale=True,
            img_height=FRAME_SHAPE[0],
            img_width=FRAME_SHAPE[1],
            noop_max=config.noop_max,
            episodic_life=False,  # would reset the whole game on a life loss
            life_loss_info=config.life_loss_ends_episode,
            reward_clipping=False,  # raw scores are needed for reporting
            use_fire_reset=config.fire_after_life_loss,
            repeat_action_probability=config.sticky_action_prob,
            max_num_frames_per_episode=config.max_frames_per_game,
        )
        self.action_names = [a.name for a in self.ale.get_action_set()]


class AtariPipeline:
    """Vector of Atari games with the learning conventions of the Nature DQN papers.

    They run on ale-py's C++ vector env, or on `emulator` when given one: the same
    conventions then apply to the frame-by-frame emulator that videos are made with.
    """

    def __init__(self, config: EnvConfig, emulator: Emulator | None = None):
        self.config = config
        self.num_envs = config.num_envs
        self._env: Emulator = emulator if emulator is not None else _VectorEmulator(config)
        self.action_names = list(self._env.action_names)
        self.num_actions = len(self.action_names)
        self._fire = config.fire_after_life_loss and needs_fire(self.action_names)
        n = config.num_envs
        # ale-py stacks the frames in its C++ threads, but starts a game's stack with zeros
        # and carries the old life's frames over a life loss: the first stack_num - 1 stacks
        # of each episode get their older slots filled here, from the episode's first frame.
        self._episode_age = np.zeros(n, dtype=np.int64)  # steps since the episode's first stack
        self._pending_reset = np.zeros(n, dtype=bool)  # last step ended an episode
        self._fire_next = np.zeros(n, dtype=bool)  # a life was lost: press FIRE now
        self._lives = np.zeros(n, dtype=np.int64)
        self._episode_frame = np.zeros(n, dtype=np.int64)
        self._game_score = np.zeros(n, dtype=np.float64)
        self._game_steps = np.zeros(n, dtype=np.int64)
        self._episode_score = np.zeros(n, dtype=np.float64)
        self._episode_steps = np.zeros(n, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new game in every env; returns the first stacks.

        Each env's seed is drawn from a SeedSequence of the run's seed: ale-py's own
        `seed, seed + 1, ...` would make env 1 of seed 0 the same game as env 0 of seed 1.
        """
        sequence = np.random.SeedSequence(self.config.seed if seed is None else seed)
        env_seeds = sequence.generate_state(self.num_envs, dtype=np.uint32) >> 1  # int32 range
        obs, info = self._env.reset(seed=env_seeds.astype(np.int64))
        self._fix_stacks(obs, np.ones(self.num_envs, dtype=bool))
        self._pending_reset[:] = False
        self._fire_next[:] = False
        self._lives[:] = info["lives"]
        self._episode_frame[:] = info["episode_frame_number"]
        for counter in (self._game_score, self._game_steps, self._episode_score,
                        self._episode_steps):
            counter[:] = 0
        return obs

    def step(self, actions: np.ndarray) -> Step:
        actions = np.array(actions, dtype=np.int64)
        if self._fire:
            actions[self._fire_next | self._pending_reset] = FIRE
        if YIELD_BEFORE_STEP:
            os.sched_yield()
        obs, raw, terminated, truncated, info = self._env.step(actions.astype(np.int32))
        raw = raw.astype(np.float32)
        first = self._pending_reset.copy()
        lives = info["lives"].astype(np.int64)
        episode_frame = info["episode_frame_number"].astype(np.int64)
        # A game reset restarts the frame counter; a FIRE step after a life loss adds one
        # frameskip. This tells the two kinds of reset step apart for every game.
        game_reset = first & (episode_frame != self._episode_frame + FRAMESKIP)

        games = self._finish_games(game_reset)
        self._game_score += raw
        self._game_steps += ~game_reset

        reward = np.where(first, 0.0, np.sign(raw) if self.config.clip_rewards else raw)
        done = terminated | truncated
        live = ~first
        self._episode_score += np.where(live, raw, 0.0)
        self._episode_steps += live
        episodes = self._finish_episodes(done & live)

        self._fix_stacks(obs, first)
        life_lost = (lives < self._lives) & ~game_reset & ~done
        self._fire_next = life_lost & self._fire
        self._pending_reset = done.copy()
        self._lives = lives
        self._episode_frame = episode_frame
        return Step(
            obs=obs,
            reward=reward.astype(np.float32),
            raw_reward=raw,
            terminated=terminated.astype(bool),
            truncated=truncated.astype(bool),
            first=first,
            actions=actions,
            games=games,
            episodes=episodes,
        )

    @property
    def fire_next(self) -> np.ndarray:
        """Envs whose next action is replaced by FIRE, since they just lost a life."""
        return self._fire_next.copy()

    def close(self) -> None:
        self._env.close()

    def _finish_games(self, mask: np.ndarray) -> list[Episode]:
        games = [Episode(int(i), float(self._game_score[i]), int(self._game_steps[i]))
                 for i in np.flatnonzero(mask)]
        self._game_score[mask] = 0.0
        self._game_steps[mask] = 0
        return games

    def _finish_episodes(self, mask: np.ndarray) -> list[Episode]:
        episodes = [Episode(int(i), float(self._episode_score[i]), int(self._episode_steps[i]))
                    for i in np.flatnonzero(mask)]
        self._episode_score[mask] = 0.0
        self._episode_steps[mask] = 0
        return episodes

    def _fix_stacks(self, obs: np.ndarray, first: np.ndarray) -> None:
        """Fill, in place, the slots of young episodes' stacks that predate the episode."""
        self._episode_age += 1
        self._episode_age[first] = 0
        history = self.config.frame_stack - 1
        for env in np.flatnonzero(self._episode_age < history):
            start = history - self._episode_age[env]  # the slot of the episode's first frame
            obs[env, :start] = obs[env, start] if self.config.repeat_first_frame else 0
