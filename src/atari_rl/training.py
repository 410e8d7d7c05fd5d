"""The training loop every algorithm shares: act, step the envs, learn, log, save.

An algorithm is an `Agent`: it chooses actions and learns from each step. Everything
around that (run directory, metrics, progress bar, the final policy) lives here once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from atari_rl.checkpoints import CONFIG_FILE, FINAL_POLICY, save_tensors, write_json
from atari_rl.config import RunConfig
from atari_rl.envs import AtariPipeline, Step
from atari_rl.metrics import MetricsLogger, Progress
from atari_rl.networks import configure_cpu_threads, pick_device


class Agent(Protocol):
    network: torch.nn.Module

    def act(self, obs: np.ndarray, agent_step: int) -> np.ndarray:
        """Actions for a batch of uint8 stacks [E, 4, 84, 84]."""
        ...

    def observe(self, obs: np.ndarray, step: Step, agent_step: int) -> dict[str, float] | None:
        """Learn from the step taken in obs; return statistics when an update happened."""
        ...


def make_agent(config: RunConfig, num_actions: int, device: torch.device) -> Agent:
    if config.algo == "a2c":
        from atari_rl.a2c import A2CAgent

        return A2CAgent(config, num_actions, device)
    raise ValueError(f"unknown algorithm '{config.algo}'")


def policy_metadata(config: RunConfig, num_actions: int) -> dict[str, str]:
    return {"algo": config.algo, "game": config.game, "num_actions": str(num_actions)}


def train(config: RunConfig, run_dir: Path, env: AtariPipeline) -> dict[str, float]:
    """Train in an existing run directory; returns the final score summary."""
    configure_cpu_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    agent = make_agent(config, env.num_actions, device)
    write_json(run_dir / CONFIG_FILE, dataclasses.asdict(config))
    logger = MetricsLogger(run_dir, config.log_every)
    progress = Progress(config.steps)
    obs = env.reset()
    agent_step = 0
    try:
        while agent_step < config.steps:
            actions = agent.act(obs, agent_step)
            step = env.step(actions)
            agent_step += env.num_envs
            stats = agent.observe(obs, step, agent_step)
            obs = step.obs
            logger.games(agent_step, step.games)
            if stats is not None:
                logger.update(agent_step, stats)
                progress.update(agent_step, logger.scores)
    finally:
        progress.close(logger.scores)
        logger.close(agent_step)
        save_tensors(run_dir / FINAL_POLICY, agent.network.state_dict(),
                     policy_metadata(config, env.num_actions))
    scores = logger.scores
    return {"agent_steps": agent_step, "games": scores.games, "score_mean100": scores.mean100,
            "score_mean20": scores.mean20, "best_score": scores.best}
