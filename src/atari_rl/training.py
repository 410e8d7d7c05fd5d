"""The training loop every algorithm shares: act, step the envs, learn, log, checkpoint.

An algorithm is an `Agent`: it chooses actions, learns from each step and can hand over
and take back its whole state. Everything around that (run directory, metrics, progress
bar, checkpoints, resume, signals) lives here once.

Resume: ale-py's vector env cannot save an emulator's state, so a resumed run starts new
games, seeded from the run's seed and the number of the segment (the stretch of the run
since the last restart of the games); the learner (weights, optimizer, random generators,
counters, scores) continues exactly. With `exact_resume` the games also restart at every
checkpoint of an uninterrupted run, which then goes on as a resumed one would: a run
killed at any moment and resumed equals the uninterrupted run bit for bit on the CPU, at
the price of the games cut short at each checkpoint.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from atari_rl.algorithms import get
from atari_rl.checkpoints import (
    CONFIG_FILE,
    FINAL_POLICY,
    CheckpointError,
    best_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_tensors,
    write_json,
)
from atari_rl.cliff import CliffConfig, CliffDetector, CliffEvent
from atari_rl.config import RunConfig
from atari_rl.envs import AtariPipeline, Step
from atari_rl.metrics import MetricsLogger, Progress, truncate_metrics
from atari_rl.networks import configure_cpu_threads, pick_device


class Agent(Protocol):
    network: torch.nn.Module
    lr_scale: float  # multiplies the configured learning rate; lowered by a rollback

    def start(self, obs: np.ndarray) -> None:
        """New games begin with these stacks [E, 4, 84, 84]."""
        ...

    def act(self, obs: np.ndarray, agent_step: int) -> np.ndarray:
        """Actions for a batch of uint8 stacks [E, 4, 84, 84]."""
        ...

    def observe(self, obs: np.ndarray, step: Step, agent_step: int) -> dict[str, float] | None:
        """Learn from the step taken in obs; return statistics when an update happened."""
        ...

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON-able values from which load_state restores the agent exactly."""
        ...

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...


class TrainingStopped(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, signal_number: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signal_number).name} at step {step:,}")
        self.signal_number = signal_number


class CliffStopped(Exception):
    """The cliff detector saw a collapse and the run was configured to stop on it."""

    def __init__(self, event: CliffEvent):
        super().__init__(f"stopped at step {event.step:,} on a sign of collapse, "
                         f"{event.kind}: {event.detail}")


def make_agent(config: RunConfig, num_actions: int, device: torch.device) -> Agent:
    return get(config.algo).make_agent(config, num_actions, device)


def policy_metadata(config: RunConfig, num_actions: int) -> dict[str, str]:
    return {"algo": config.algo, "game": config.game, "num_actions": str(num_actions)}


def segment_seed(config: RunConfig, segment: int) -> int:
    """The seed of a segment's games: segment 0 plays the run's seed, later ones new games."""
    if segment == 0:
        return config.seed
    return int(np.random.SeedSequence([config.seed, segment]).generate_state(1)[0] >> 1)


def latest_checkpoint(run_dir: Path) -> Path:
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from: start a new run "
                              f"with another --run-dir")
    return checkpoints[-1]


class _StopSignals:
    """Turns SIGINT and SIGTERM into a flag the loop checks, so it can checkpoint first."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        self.received = number


def train(config: RunConfig, run_dir: Path, env: AtariPipeline,
          resume: bool = False) -> dict[str, float]:
    """Train in a run directory (a new one, or one to resume); returns the final scores."""
    configure_cpu_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    agent = make_agent(config, env.num_actions, device)
    agent_step, segment, saved_metrics = 0, 0, None
    detector = CliffDetector(CliffConfig(), env.num_actions, get(config.algo).cliff)
    if resume:
        tensors, state = load_checkpoint(latest_checkpoint(run_dir))
        if (state["algo"], state["game"]) != (config.algo, config.game):
            raise CheckpointError(f"the checkpoint is of {state['algo']} on {state['game']}, "
                                  f"the run of {config.algo} on {config.game}: it is not "
                                  f"this run's")
        agent.load_state(tensors, state["agent"])
        agent.lr_scale = state["lr_scale"]
        detector.load_state_dict(state["cliff"])
        agent_step, segment, saved_metrics = state["step"], state["segment"], state["metrics"]
        truncate_metrics(run_dir, agent_step)
    write_json(run_dir / CONFIG_FILE, dataclasses.asdict(config))
    logger = MetricsLogger(run_dir, config.log_every, start_step=agent_step)
    if saved_metrics is not None:
        logger.load_state_dict(saved_metrics)
    progress = Progress(config.steps, initial=agent_step)

    def checkpoint(reason: str) -> None:
        logger.flush_row(agent_step)
        tensors, agent_meta = agent.state()
        state = {"algo": config.algo, "game": config.game, "reason": reason,
                 "segment": segment + 1, "metrics": logger.state_dict(), "agent": agent_meta,
                 "lr_scale": agent.lr_scale, "cliff": detector.state_dict()}
        save_checkpoint(run_dir, agent_step, tensors, state, config.keep_checkpoints,
                        logger.scores.mean100)

    def react(event: CliffEvent) -> None:
        reaction = config.on_cliff
        best = best_checkpoint(run_dir)
        if reaction == "rollback" and best is None:
            reaction = "warn"  # no checkpoint yet to go back to
        if reaction == "warn" and event.kind == "non_finite":
            reaction = "stop"  # a network with NaN weights cannot act: nothing to warn about
        logger.event(agent_step, event.kind, reaction, event.detail)
        if reaction == "stop":
            checkpoint("cliff")
            raise CliffStopped(event)
        if reaction == "rollback":
            tensors, state = load_checkpoint(best)
            agent.load_state(tensors, state["agent"])
            agent.lr_scale *= config.cliff_lr_factor
            detector.reset()

    def restart_games() -> np.ndarray:
        obs = env.reset(seed=segment_seed(config, segment))
        agent.start(obs)
        return obs

    next_checkpoint = (agent_step // config.checkpoint_every + 1) * config.checkpoint_every
    obs = restart_games()
    try:
        with _StopSignals() as stop:
            while agent_step < config.steps:
                actions = agent.act(obs, agent_step)
                step = env.step(actions)
                agent_step += env.num_envs
                stats = agent.observe(obs, step, agent_step)
                obs = step.obs
                logger.games(agent_step, step.games)
                if stop.received is not None:
                    checkpoint("signal")
                    raise TrainingStopped(stop.received, agent_step)
                if stats is None:
                    continue
                logger.update(agent_step, stats)
                progress.update(agent_step, logger.scores)
                scores = logger.scores
                event = detector.check(agent_step, stats, scores.mean100, scores.mean20,
                                       scores.best_mean100, games=scores.games)
                if event is not None:
                    react(event)
                if agent_step >= next_checkpoint and agent_step < config.steps:
                    checkpoint("interval")
                    next_checkpoint += config.checkpoint_every
                    if config.exact_resume:
                        segment += 1
                        obs = restart_games()
            checkpoint("end")
    finally:
        progress.close(logger.scores)
        logger.close(agent_step)
    save_tensors(run_dir / FINAL_POLICY, agent.network.state_dict(),
                 policy_metadata(config, env.num_actions))
    scores = logger.scores
    return {"agent_steps": agent_step, "games": scores.games, "score_mean100": scores.mean100,
            "score_mean20": scores.mean20, "best_score": scores.best}
