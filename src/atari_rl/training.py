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
from atari_rl.cores import ThreadGovernor, measure_free_cores
from atari_rl.envs import AtariPipeline, Step
from atari_rl.metrics import MetricsLogger, Progress, truncate_metrics
from atari_rl.networks import configure_cpu_threads, pick_device
from atari_rl.policy import policy_metadata
from atari_rl.run_files import CONFIG_FILE, FINAL_POLICY
from atari_rl.stop_signals import StopSignals


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


class _Run:
    """A run in progress: the agent, its games, its logs and the counters a checkpoint saves.

    Split by phase, as Dopamine's runner is: start or resume, checkpoint, react to a cliff,
    restart the games; `train` is the loop that calls them.
    """

    def __init__(self, config: RunConfig, run_dir: Path, env: AtariPipeline, resume: bool,
                 free_cores: int | None = None):
        # --torch-threads 0: the free cores, counted again every few seconds (cores.py)
        self.governor = None
        if config.torch_threads == 0:
            threads = free_cores if free_cores is not None else measure_free_cores()
            self.governor = ThreadGovernor(set_threads=torch.set_num_threads, threads=threads)
        configure_cpu_threads(config.torch_threads or self.governor.threads)
        torch.manual_seed(config.seed)
        self.config, self.run_dir, self.env = config, run_dir, env
        self.agent = make_agent(config, env.num_actions, pick_device(config.device))
        self.detector = CliffDetector(CliffConfig(), env.num_actions, get(config.algo).cliff)
        self.step = 0  # agent steps, over all envs
        self.segment = 0  # how many times the games were restarted: their seed
        saved_metrics = self.resume() if resume else None
        write_json(run_dir / CONFIG_FILE, dataclasses.asdict(config))
        self.logger = MetricsLogger(run_dir, config.log_every, start_step=self.step)
        if saved_metrics is not None:
            self.logger.load_state_dict(saved_metrics)
        self.progress = Progress(config.steps, initial=self.step)
        every = config.checkpoint_every
        self.next_checkpoint = (self.step // every + 1) * every

    def resume(self) -> dict[str, Any]:
        """Take back the last checkpoint's agent, detector and counters, and drop the rows a
        killed run logged after it (before the logger opens the files); returns the
        logger's saved state."""
        tensors, state = load_checkpoint(latest_checkpoint(self.run_dir))
        config = self.config
        if (state["algo"], state["game"]) != (config.algo, config.game):
            raise CheckpointError(f"the checkpoint is of {state['algo']} on {state['game']}, "
                                  f"the run of {config.algo} on {config.game}: it is not "
                                  f"this run's")
        self.agent.load_state(tensors, state["agent"])
        self.agent.lr_scale = state["lr_scale"]
        self.detector.load_state_dict(state["cliff"])
        self.step, self.segment = state["step"], state["segment"]
        truncate_metrics(self.run_dir, self.step)
        return state["metrics"]

    def restart_games(self) -> np.ndarray:
        """New games, seeded by the segment; returns their first stacks."""
        obs = self.env.reset(seed=segment_seed(self.config, self.segment))
        self.agent.start(obs)
        return obs

    def checkpoint(self, reason: str) -> None:
        """Save everything a resumed run needs; it will play the next segment's games."""
        self.logger.flush_row(self.step)
        tensors, agent_meta = self.agent.state()
        state = {"algo": self.config.algo, "game": self.config.game, "reason": reason,
                 "segment": self.segment + 1, "metrics": self.logger.state_dict(),
                 "agent": agent_meta, "lr_scale": self.agent.lr_scale,
                 "cliff": self.detector.state_dict()}
        save_checkpoint(self.run_dir, self.step, tensors, state, self.config.keep_checkpoints,
                        self.logger.scores.mean100)

    def interval_checkpoint(self, obs: np.ndarray) -> np.ndarray:
        """The periodic checkpoint; with exact_resume the games then restart, as a resumed
        run's would. Returns the stacks to play on."""
        self.checkpoint("interval")
        self.next_checkpoint += self.config.checkpoint_every
        if not self.config.exact_resume:
            return obs
        self.segment += 1
        return self.restart_games()

    def learned(self, stats: dict[str, float]) -> None:
        """Log an update's statistics and watch them, with the scores, for a cliff."""
        if self.governor is not None:
            self.governor.poll()
            stats = {**stats, "torch_threads": float(self.governor.threads)}
        self.logger.update(self.step, stats)
        self.progress.update(self.step, self.logger.scores)
        scores = self.logger.scores
        event = self.detector.check(self.step, stats, scores.mean100, scores.mean20,
                                    scores.best_mean100, games=scores.games)
        if event is not None:
            self.react(event)

    def react(self, event: CliffEvent) -> None:
        """Do what config.on_cliff says about a sign of collapse; CliffStopped to stop."""
        reaction = self.config.on_cliff
        best = best_checkpoint(self.run_dir)
        if reaction == "rollback" and best is None:
            reaction = "warn"  # no checkpoint yet to go back to
        if reaction == "warn" and event.kind == "non_finite":
            reaction = "stop"  # a network with NaN weights cannot act: nothing to warn about
        self.logger.event(self.step, event.kind, reaction, event.detail)
        if reaction == "stop":
            self.checkpoint("cliff")
            raise CliffStopped(event)
        if reaction == "rollback":
            tensors, state = load_checkpoint(best)
            self.agent.load_state(tensors, state["agent"])
            self.agent.lr_scale *= self.config.cliff_lr_factor
            self.detector.reset()

    def close(self) -> None:
        self.progress.close(self.logger.scores)
        self.logger.close(self.step)

    def finish(self) -> dict[str, float]:
        """Write the final policy; returns the final scores."""
        save_tensors(self.run_dir / FINAL_POLICY, self.agent.network.state_dict(),
                     policy_metadata(self.config.algo, self.config.game,
                                     self.env.num_actions))
        scores = self.logger.scores
        return {"agent_steps": self.step, "games": scores.games,
                "score_mean100": scores.mean100, "score_mean20": scores.mean20,
                "best_score": scores.best}


def train(config: RunConfig, run_dir: Path, env: AtariPipeline, resume: bool = False,
          free_cores: int | None = None) -> dict[str, float]:
    """Train in a run directory (a new one, or one to resume); returns the final scores.
    free_cores: the cores counted free at the start, if the caller has counted them."""
    run = _Run(config, run_dir, env, resume, free_cores)
    obs = run.restart_games()
    try:
        with StopSignals() as stop:
            while run.step < config.steps:
                actions = run.agent.act(obs, run.step)
                step = env.step(actions)
                run.step += env.num_envs
                stats = run.agent.observe(obs, step, run.step)
                obs = step.obs
                run.logger.games(run.step, step.games)
                if stop.received is not None:
                    run.checkpoint("signal")
                    raise TrainingStopped(stop.received, run.step)
                if stats is None:
                    continue
                run.learned(stats)
                if run.step >= run.next_checkpoint and run.step < config.steps:
                    obs = run.interval_checkpoint(obs)
            run.checkpoint("end")
    finally:
        run.close()
    return run.finish()
