"""Honest evaluation: whole games under a stated protocol, raw scores, exactly N of them.

Training scores flatter an agent (they mix policies of the whole run and, with life loss
ending episodes, are easy to misread), so a result is quoted from this protocol instead:

- whole games of all lives: a life loss does not end anything, but FIRE is still pressed
  after it, since Breakout does not relaunch the ball without it;
- up to 30 no-op frames at the start of each game, seeded, so games differ;
- raw, unclipped scores; a cap of 108,000 frames (30 minutes of play) per game;
- epsilon-greedy with epsilon 0.01 (Mnih et al. 2015), or greedy on request;
- optionally sticky actions with probability 0.25 (Machado et al. 2018, the v5 protocol).

Games are spread over parallel envs, each env playing a share fixed up front. Taking the
first N games to finish would over-sample short games (the envs playing long ones are
still busy when the count is reached) and bias the mean down.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np

from atari_rl.envs import FRAMESKIP, AtariPipeline, EnvConfig
from atari_rl.networks import one_thread
from atari_rl.policy import EVAL_EPSILON

STICKY_ACTION_PROB = 0.25  # Machado et al. 2018
MAX_FRAMES_PER_GAME = 108_000


class Actor(Protocol):
    num_actions: int

    def act(self, obs: np.ndarray, greedy: bool = True) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalProtocol:
    """Everything that decides an evaluation's result; saved next to the scores.

    `record` plays its games under it too (`media.RecordSettings`), so that a video shows
    the agent that evaluation scores; the defaults here are the command line's.
    """

    games: int = 100
    num_envs: int = 8
    seed: int = 0
    greedy: bool = False
    epsilon: float = EVAL_EPSILON  # used only when not greedy
    noop_max: int = 30  # no-op frames at the start of each game, at most
    sticky_action_prob: float = 0.0
    max_frames_per_game: int = MAX_FRAMES_PER_GAME

    def validate(self) -> None:
        """Raise ValueError with one line naming the bad value."""
        checks = [
            (self.games >= 1, "--games must be at least 1"),
            (self.num_envs >= 1, "--num-envs must be at least 1"),
            (0.0 <= self.epsilon <= 1.0, "--epsilon must be in [0, 1]"),
            (self.noop_max >= 0, "--noop-max must be 0 or more"),
            (0.0 <= self.sticky_action_prob < 1.0, "sticky action probability must be in [0, 1)"),
            (self.max_frames_per_game >= FRAMESKIP,
             f"--max-frames must be at least {FRAMESKIP} (one agent step)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def describe(self, random_policy: bool = False) -> dict[str, Any]:
        """The protocol as saved: the settings plus the fixed conventions, in words."""
        if random_policy:
            actions = "uniformly random"
        else:
            actions = "greedy" if self.greedy else f"epsilon-greedy (epsilon {self.epsilon:g})"
        return {
            **asdict(self),
            "num_envs": self.envs_used,
            "epsilon": 0.0 if self.greedy or random_policy else self.epsilon,
            "actions": actions,
            "whole_games": "all lives; a life loss does not end the game",
            "fire_after_life_loss": True,
            "scores": "raw game score, unclipped",
            "frameskip": FRAMESKIP,
            "observations": "grayscale 84x84, max of the last two frames, stack of 4",
            "game_assignment": "each env plays a share of the games fixed up front",
        }

    def env_config(self, game: str, num_envs: int, env_threads: int = 0) -> EnvConfig:
        """The pipeline's settings for playing under this protocol: whole games, raw scores."""
        return EnvConfig(
            game=game,
            num_envs=num_envs,
            num_threads=env_threads,
            seed=self.seed,
            noop_max=self.noop_max,
            life_loss_ends_episode=False,
            fire_after_life_loss=True,
            repeat_first_frame=True,
            clip_rewards=False,
            sticky_action_prob=self.sticky_action_prob,
            max_frames_per_game=self.max_frames_per_game,
        )

    @property
    def envs_used(self) -> int:
        return min(self.num_envs, self.games)


def game_shares(games: int, num_envs: int) -> list[int]:
    """How many games each env plays: N split as evenly as possible, decided before playing."""
    base, extra = divmod(games, num_envs)
    return [base + (i < extra) for i in range(num_envs)]


def summarize(scores: list[float]) -> dict[str, float]:
    """Mean, median, population standard deviation (ddof=0), min and max of the scores."""
    values = np.asarray(scores, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def evaluate(actor: Actor, game: str, protocol: EvalProtocol,
             env_threads: int = 0) -> dict[str, Any]:
    """Play the protocol's games; returns the statistics, per-game scores and the protocol.
    env_threads: emulator threads (0: one per core); the result does not depend on it."""
    protocol.validate()
    num_envs = protocol.envs_used
    env = AtariPipeline(protocol.env_config(game, num_envs, env_threads))
    shares = game_shares(protocol.games, num_envs)
    played: list[list[tuple[float, int, bool]]] = [[] for _ in range(num_envs)]
    capped = np.zeros(num_envs, dtype=bool)  # did the env's last game end at the frame cap
    start = time.perf_counter()
    agent_steps = 0
    with closing(env), one_thread():
        obs = env.reset()
        while any(len(p) < s for p, s in zip(played, shares, strict=True)):
            step = env.step(actor.act(obs, greedy=protocol.greedy))
            agent_steps += num_envs
            # A game is reported on the reset step after it ended, so `capped` still
            # holds the flag of the step that ended it.
            for finished in step.games:
                mine = played[finished.env_id]
                if len(mine) < shares[finished.env_id]:
                    mine.append((finished.score, finished.steps, bool(capped[finished.env_id])))
            capped = np.where(step.done, step.truncated, capped)
            obs = step.obs
    games = [(env_id, *g) for env_id, mine in enumerate(played) for g in mine]
    scores = [g[1] for g in games]
    return {
        "game": game,
        "algo": getattr(actor, "algo", "unknown"),
        **summarize(scores),
        "games": len(games),
        "scores": scores,
        "lengths": [g[2] for g in games],  # agent steps of 4 frames
        "env_ids": [g[0] for g in games],
        "capped_games": sum(g[3] for g in games),
        "protocol": protocol.describe(random_policy=getattr(actor, "algo", "") == "random"),
        "agent_steps": agent_steps,
        "seconds": round(time.perf_counter() - start, 2),
    }


# The ways of playing that `atari-rl evaluate` puts side by side: the same agent scores
# differently under each, and a number means nothing without its protocol.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "epsilon": {"greedy": False, "sticky_action_prob": 0.0},  # Mnih et al. 2015: epsilon 0.01
    "greedy": {"greedy": True, "sticky_action_prob": 0.0},  # always the best action
    # Machado et al. 2018, and gymnasium's default for ALE/Breakout-v5: the previous action
    # is repeated with probability 0.25, so a policy cannot replay a memorised sequence
    "sticky": {"greedy": False, "sticky_action_prob": STICKY_ACTION_PROB},
    "greedy-sticky": {"greedy": True, "sticky_action_prob": STICKY_ACTION_PROB},
}
SIDE_BY_SIDE = ("epsilon", "greedy", "sticky")  # what `evaluate` plays unless told otherwise


def protocol_name(protocol: EvalProtocol) -> str:
    """The name in PROTOCOLS of a protocol's way of playing."""
    for name, settings in PROTOCOLS.items():
        if all(getattr(protocol, key) == value for key, value in settings.items()):
            return name
    return "custom"


def evaluate_protocols(actor: Actor, game: str, base: EvalProtocol, names: list[str],
                       env_threads: int = 0) -> dict[str, dict[str, Any]]:
    """Each named protocol played with the base's games, seed, no-ops and frame cap."""
    return {name: evaluate(actor, game, replace(base, **PROTOCOLS[name]), env_threads)
            for name in names}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One line per protocol, so that no greedy number is read as an epsilon one."""
    header = (f"{'protocol':<14}{'actions':<30}{'sticky':>7}{'games':>7}{'mean':>9}"
              f"{'median':>9}{'std':>8}{'min':>7}{'max':>7}")
    lines = [header]
    for name, result in results.items():
        protocol = result["protocol"]
        lines.append(f"{name:<14}{protocol['actions']:<30}"
                     f"{protocol['sticky_action_prob']:>7g}{result['games']:>7}"
                     f"{result['mean']:>9.1f}{result['median']:>9g}{result['std']:>8.1f}"
                     f"{result['min']:>7g}{result['max']:>7g}")
    return "\n".join(lines)


def format_result(result: dict[str, Any]) -> str:
    """A few lines for the terminal: the protocol in words, the statistics, every score."""
    protocol = result["protocol"]
    sticky = protocol["sticky_action_prob"]
    lines = [
        f"{result['game']}, {result['algo']} policy: {result['games']} whole game"
        f"{'s' if result['games'] > 1 else ''}; actions: {protocol['actions']}; "
        f"up to {protocol['noop_max']} no-op frames; "
        f"{f'sticky actions {sticky:g}' if sticky else 'no sticky actions'}; "
        f"cap {protocol['max_frames_per_game']:,} frames; seed {protocol['seed']}",
        f"score mean {result['mean']:.2f}  median {result['median']:g}  std {result['std']:.2f}"
        f"  min {result['min']:g}  max {result['max']:g}"
        + (f"  ({result['capped_games']} games hit the frame cap)" if result["capped_games"]
           else ""),
        "scores: " + " ".join(f"{s:g}" for s in result["scores"]),
    ]
    return "\n".join(lines)
