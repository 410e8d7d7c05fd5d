"""Proximal policy optimization (Schulman et al. 2017) with the clipped surrogate objective.

Every env plays `n_steps` with the current policy, keeping each action's log-probability
and the critic's value (the on-policy `rollout.Rollout` that A2C uses too). Then GAE(lambda)
advantages (`maths.gae_advantages`), and `epochs` passes over the rollout in `minibatches`
shuffled minibatches, each one Adam step on `maths.ppo_loss`: the probability ratio of
each action may move only `clip_range` away from 1 before its gradient stops, so several
passes over the same data do not push the policy far from the one that collected it. The
learning rate, and optionally the clip range, anneal linearly to 0 over the run.

The defaults are the anchors' Atari settings (CleanRL's `ppo_atari`, RL Zoo): 8 envs, 128
steps, 4 epochs of 4 minibatches, Adam 2.5e-4, clip 0.1, entropy 0.01, value 0.5,
gamma 0.99, lambda 0.95, clipped value loss.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atari_rl.algorithms import PROBABILITIES, Algorithm, CliffSignals, register
from atari_rl.checkpoints import learner_state, load_learner_state
from atari_rl.config import Preset, RunConfig, require
from atari_rl.envs import Step
from atari_rl.maths import explained_variance, gae_advantages, linear_schedule, ppo_loss
from atari_rl.networks import (
    ActorCritic,
    acting_copy,
    actor_critic_from,
    bf16_autocast,
    bf16_pays_off,
    channels_last,
    one_thread,
    select_stacks,
)
from atari_rl.plots import POLICY_ENTROPY, STATE_VALUES, FigureSpec, Panel
from atari_rl.rollout import Rollout, RolloutBatch

SCHEDULES = ("constant", "linear")


@dataclass
class PPOConfig(RunConfig):
    """PPO with the clipped surrogate objective and GAE (Schulman et al. 2017)."""

    algo: str = "ppo"
    num_envs: int = 8
    n_steps: int = 128  # steps of every env per rollout
    epochs: int = 4  # passes over each rollout
    minibatches: int = 4  # per pass; each holds num_envs * n_steps / minibatches steps
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE's lambda: 0 is the one-step TD error, 1 the whole return
    learning_rate: float = 2.5e-4  # Adam's step size at the start of the run
    lr_schedule: str = "linear"  # linear decay to 0 over the run, or constant
    optimizer_eps: float = 1e-5  # Adam's epsilon
    clip_range: float = 0.1  # how far the probability ratio may move from 1
    clip_schedule: str = "constant"  # constant, or linear: the clip range decays to 0 too
    value_clip: bool = True  # clip the value loss by the clip range (CleanRL's clip_vloss)
    entropy_coef: float = 0.01  # weight of the entropy bonus in the loss
    value_coef: float = 0.5  # weight of the value loss (half the squared error)
    max_grad_norm: float = 0.5  # gradients are clipped to this L2 norm
    compile: bool = True  # torch.compile the network
    bf16: bool = True  # bf16 autocast of the torso, acting and learning, on CPUs that have it
    log_every: int = 10_240

    def validate(self) -> None:
        super().validate()
        require(self.n_steps > 0, "--n-steps must be a positive integer")
        require(self.epochs > 0, "--epochs must be at least 1")
        require(0 < self.minibatches <= self.num_envs * self.n_steps,
                "--minibatches must be between 1 and num_envs x n_steps")
        require(0.0 < self.gamma <= 1.0, "--gamma must be in (0, 1]")
        require(0.0 <= self.gae_lambda <= 1.0, "--gae-lambda must be in [0, 1]")
        require(self.learning_rate > 0, "--learning-rate must be positive")
        require(self.lr_schedule in SCHEDULES, "--lr-schedule must be constant or linear")
        require(self.clip_range > 0, "--clip-range must be positive")
        require(self.clip_schedule in SCHEDULES, "--clip-schedule must be constant or linear")
        require(self.max_grad_norm > 0, "--max-grad-norm must be positive")


PRESETS = (
    Preset("ppo", "ppo", "PPO with the anchors' Atari settings (CleanRL, RL Zoo): 8 envs, "
           "128 steps, 4 epochs x 4 minibatches, Adam 2.5e-4, clip 0.1", {}),
)


class PPOAgent:
    """The `training.Agent` of PPO."""

    def __init__(self, config: PPOConfig, num_actions: int, device: torch.device):
        self.config = config
        self.device = device
        # channels_last and static shapes (acting on num_envs observations, learning on
        # minibatches of one size): a minibatch of 256 takes 31 ms instead of the 48 ms of
        # dynamic shapes in the default layout (benchmarks/ppo_update.py, 2 threads, bf16)
        self.network = ActorCritic(num_actions).to(device, memory_format=torch.channels_last)
        self._autocast = config.bf16 and bf16_pays_off(device)
        # The policy stays fixed for a whole rollout, so acting reads a copy whose torso
        # holds bf16 weights, refreshed after each update and load, instead of autocast
        # casting every weight at every step: an act on 8 observations, one thread, takes
        # 0.85-0.92 ms against 1.24-1.38 ms (benchmarks/ppo_update.py)
        self.acting_network = acting_copy(self.network, bf16=self._autocast)
        # One thread pays for a short act: bf16 on 8 observations takes about 1.2 ms, and
        # waking a second OpenMP thread after every emulator step costs more than it does
        # (1.7 against 2.1 ms). In fp32 on an AVX2 CPU an act takes 5.9 ms on one thread
        # and 4.4 ms on two, so there it keeps all threads (README, "On a CPU without bf16").
        self._acting_threads = one_thread if self._autocast else nullcontext
        self._forward = self.network
        self._policy_step = self._draw
        if config.compile:
            self._forward = torch.compile(self.network, dynamic=False)
            self._policy_step = torch.compile(self._draw, dynamic=False)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate,
                                          eps=config.optimizer_eps,
                                          fused=device.type in ("cpu", "cuda"))
        self.num_actions = num_actions
        self.rollout = self._new_rollout()
        self.lr_scale = 1.0
        self._sampling = torch.Generator(device=device).manual_seed(config.seed)
        self._shuffling = torch.Generator().manual_seed(config.seed + 1)
        self._acted: tuple[np.ndarray, np.ndarray] | None = None

    def _new_rollout(self) -> Rollout:
        return Rollout(self.config.num_envs, self.config.n_steps, self.config.n_steps)

    def start(self, obs: np.ndarray) -> None:
        """New games begin: the steps of the interrupted ones are not learned from."""
        self.rollout = self._new_rollout()

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = learner_state(self.network, self.optimizer)
        return {**tensors, "rng": self._sampling.get_state(),
                "shuffle_rng": self._shuffling.get_state()}, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        load_learner_state(self.network, self.optimizer, tensors, meta)
        self.acting_network.load_state_dict(self.network.state_dict())
        self._sampling.set_state(tensors["rng"])
        self._shuffling.set_state(tensors["shuffle_rng"])

    @torch.inference_mode()
    def act(self, obs: np.ndarray, agent_step: int) -> np.ndarray:
        """Draw from the policy; keep each action's log-probability and the state's value."""
        uniform = torch.rand(len(obs), self.num_actions, generator=self._sampling,
                             device=self.device)
        with self._acting_threads():
            actions, log_prob, values = self._policy_step(self._input(torch.from_numpy(obs)),
                                                          uniform)
        self._acted = (log_prob.cpu().numpy(), values.cpu().numpy())
        return actions.cpu().numpy()

    def _draw(self, obs: torch.Tensor, uniform: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions drawn from the policy by the Gumbel-max trick (the argmax of the log
        probabilities plus -log(-log(U)) noise is a draw from them), so that the forward,
        the draw and the log-probabilities compile into one graph; also the values."""
        with bf16_autocast(self.device, self._autocast):
            logits, values = self.acting_network(obs)
        log_probs = torch.log_softmax(logits.float(), dim=1)
        actions = (log_probs - torch.log(-torch.log(uniform))).argmax(dim=1)
        return actions, log_probs.gather(1, actions[:, None]).squeeze(1), values.float()

    def _input(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations on the device, channels_last like the network: a minibatch of 256
        learns in 24 ms from them against 26-32 ms from the default layout (2 threads,
        bf16), which the compiled graph converts more slowly than a copy does. A rollout's
        observations are laid out once; the minibatches indexed from them keep it."""
        return channels_last(obs.to(self.device))

    def observe(self, obs: np.ndarray, step: Step, agent_step: int) -> dict[str, float] | None:
        if self._acted is None:
            raise RuntimeError("observe() needs the act() of the same step first")
        log_prob, value = self._acted
        self.rollout.add(obs, step, log_prob=log_prob, value=value)
        if not self.rollout.ready():
            return None
        return self.update(self.rollout.take(), step.obs, agent_step / self.config.steps)

    def update(self, batch: RolloutBatch, next_obs: np.ndarray,
               progress: float) -> dict[str, float]:
        """GAE over the rollout, then epochs x minibatches of clipped-objective steps."""
        config = self.config
        lr = config.learning_rate * self.lr_scale
        if config.lr_schedule == "linear":
            lr = linear_schedule(lr, 0.0, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = config.clip_range
        if config.clip_schedule == "linear":
            clip = max(linear_schedule(clip, 0.0, progress), 1e-8)
        with torch.inference_mode(), bf16_autocast(self.device, self._autocast):
            _, last_values = self._forward(self._input(torch.from_numpy(next_obs)))
        values = np.concatenate([batch.extras["value"], last_values.float().cpu().numpy()[None]])
        advantages, returns = gae_advantages(batch.rewards, batch.terminated, batch.truncated,
                                             values, config.gamma, config.gae_lambda)
        keep = np.flatnonzero(batch.mask.reshape(-1))  # real transitions only

        def flat(array: np.ndarray) -> torch.Tensor:
            rows = array.reshape(-1, *array.shape[2:])[keep]
            return torch.from_numpy(np.ascontiguousarray(rows)).to(self.device)

        obs, actions = self._input(flat(batch.obs)), flat(batch.actions)
        old_log_probs, old_values = flat(batch.extras["log_prob"]), flat(values[:-1])
        advantages_t, returns_t = flat(advantages), flat(returns)
        # Every minibatch has the size it would have without reset steps, so that the
        # compiled network sees one shape: each pass takes every real transition once, and
        # the few the reset steps left room for a second time.
        size = config.num_envs * config.n_steps // config.minibatches
        per_pass = size * config.minibatches
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(config.epochs if len(keep) else 0):
            order = torch.randperm(len(keep), generator=self._shuffling)
            order = order.repeat(-(-per_pass // len(keep)))[:per_pass].to(self.device)
            for start in range(0, per_pass, size):
                index = order[start:start + size]
                with bf16_autocast(self.device, self._autocast):
                    logits, new_values = self._forward(select_stacks(obs, index))
                loss, stats = ppo_loss(logits, new_values, actions[index], old_log_probs[index],
                                       advantages_t[index], returns_t[index], old_values[index],
                                       clip, config.value_coef, config.entropy_coef,
                                       clip if config.value_clip else None)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.network.parameters(), config.max_grad_norm)
                self.optimizer.step()
                for name, value in stats.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                steps += 1
        self.acting_network.load_state_dict(self.network.state_dict())
        means = {name: total / max(steps, 1) for name, total in sums.items()}
        means.update(
            explained_variance=explained_variance(values[:-1].reshape(-1)[keep],
                                                  returns.reshape(-1)[keep]),
            learning_rate=lr,
            clip_range=clip,
        )
        return means

ALGORITHM = register(Algorithm(
    name="ppo",
    title="PPO",
    config=PPOConfig,
    presets=PRESETS,
    make_agent=lambda config, num_actions, device: PPOAgent(config, num_actions, device),
    load_network=actor_critic_from,
    outputs=PROBABILITIES,
    figures=(
        POLICY_ENTROPY,
        FigureSpec("losses", "Losses (the value loss on a log scale)", (
            Panel("policy_loss", "policy loss\n(clipped surrogate)"),
            Panel("value_loss", "value loss", log=True),
        )),
        STATE_VALUES,
        FigureSpec("ppo_updates", "How far each update moves the policy", (
            Panel("approx_kl", "approximate KL\n(old policy to new)"),
            Panel("clip_fraction", "fraction of ratios\noutside the clip range"),
        )),
        FigureSpec("learning_rate", "Learning rate and clip range", (
            Panel("learning_rate", "learning rate"),
            Panel("clip_range", "clip range"),
        )),
    ),
    cliff=CliffSignals(loss="value_loss", entropy="entropy",
                       watched=("policy_loss", "value_loss", "entropy", "grad_norm",
                                "value_mean")),
))
