"""Synchronous advantage actor-critic with N-step returns.

Every env rolls out N steps with the current policy, then one update. The target of each
step sums the real rewards to the end of the rollout and adds the critic's value of the
*last* state only (`maths.nstep_returns`). With N = "episode" the rollout of each env runs
to the end of its training episode (Monte Carlo returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atari_rl.algorithms import PROBABILITIES, Algorithm, CliffSignals, register
from atari_rl.checkpoints import learner_state, load_learner_state
from atari_rl.config import Preset, RunConfig, require
from atari_rl.envs import Step
from atari_rl.maths import a2c_loss, explained_variance, linear_schedule, nstep_returns
from atari_rl.networks import ActorCritic, actor_critic_from, bf16_autocast, bf16_pays_off
from atari_rl.plots import POLICY_ENTROPY, STATE_VALUES, FigureSpec, Panel
from atari_rl.rollout import EPISODE, Rollout, RolloutBatch

MAX_UPDATE_BATCH = 2_048  # samples per forward/backward; bounds memory in episode mode


@dataclass
class A2CConfig(RunConfig):
    """Synchronous advantage actor-critic (Mnih et al. 2016, the synchronous form of A3C)."""

    algo: str = "a2c"
    # Sticky actions 0.25, ALE/v5's default (Machado et al. 2018): trained with them, the
    # shipped agent scores more under every protocol at equal steps, with them (273 against
    # 77) and without (321 against 270): README, "Sticky actions". The write-up's seed-*
    # presets keep 0.
    sticky_action_prob: float = 0.25
    n_steps: int | str = 5  # N-step returns: a positive integer, or "episode" (Monte Carlo)
    max_rollout_steps: int = 2_000  # bounds memory when n_steps is "episode"
    gamma: float = 0.99  # discount factor
    learning_rate: float = 7e-4  # the optimizer's step size at the start of the run
    lr_schedule: str = "linear"  # linear decay to 0 over the run (as OpenAI baselines), or constant
    optimizer: str = "rmsprop"  # rmsprop as in A3C, or adam
    rmsprop_alpha: float = 0.99  # RMSprop's smoothing constant
    optimizer_eps: float = 1e-5  # the optimizer's epsilon
    entropy_coef: float = 0.01  # weight of the entropy bonus in the loss
    value_coef: float = 0.5  # weight of the critic's squared error in the loss
    max_grad_norm: float = 0.5  # gradients are clipped to this L2 norm
    action_selection: str = "sample"  # sample, or argmax (the write-up's choice)
    compile: bool = True  # torch.compile the network (FACTS.md: +50% on this CPU)
    bf16: bool = True  # bf16 autocast of the torso, acting and learning, on CPUs that have it
    log_every: int = 8_000

    def validate(self) -> None:
        super().validate()
        if isinstance(self.n_steps, str) and self.n_steps != EPISODE:
            self.n_steps = parse_n_steps(self.n_steps)
        require(self.n_steps == EPISODE or self.n_steps > 0,
                "--n-steps must be a positive integer or 'episode'")
        require(self.max_rollout_steps > 0, "--max-rollout-steps must be positive")
        require(0.0 < self.gamma <= 1.0, "--gamma must be in (0, 1]")
        require(self.learning_rate > 0, "--learning-rate must be positive")
        require(self.lr_schedule in ("constant", "linear"),
                "--lr-schedule must be constant or linear")
        require(self.optimizer in ("rmsprop", "adam"), "--optimizer must be rmsprop or adam")
        require(self.action_selection in ("sample", "argmax"),
                "--action-selection must be sample or argmax")
        require(self.max_grad_norm > 0, "--max-grad-norm must be positive")


def parse_n_steps(text: str | int) -> int | str:
    if text == EPISODE:
        return EPISODE
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"--n-steps must be a positive integer or 'episode', not '{text}'") from None


def _seed_study(n_steps: int | str) -> Preset:
    """The write-up's study: entropy 0.1, critic 0.5, argmax actions, linear decay, and no
    sticky actions."""
    return Preset(
        name=f"seed-n{'inf' if n_steps == EPISODE else n_steps}",
        algo="a2c",
        summary=f"the write-up's A2C with N = {n_steps} (entropy 0.1, argmax actions, linear lr)",
        changes={
            "n_steps": n_steps,
            "entropy_coef": 0.1,
            "value_coef": 0.5,
            "action_selection": "argmax",
            "lr_schedule": "linear",
            "sticky_action_prob": 0.0,  # the write-up trained on a deterministic emulator
        },
    )


PRESETS = (
    Preset("a2c", "a2c", "best known A2C settings for Breakout (the default), trained with "
           "ALE/v5's sticky actions (0.25)", {}),
    *(_seed_study(n) for n in (5, 20, 50, 100, EPISODE)),
)


class A2CAgent:
    def __init__(self, config: A2CConfig, num_actions: int, device: torch.device):
        self.config = config
        self.device = device
        self.network = ActorCritic(num_actions).to(device)
        self._forward = torch.compile(self.network) if config.compile else self.network
        if config.optimizer == "rmsprop":
            self.optimizer: torch.optim.Optimizer = torch.optim.RMSprop(
                self.network.parameters(), lr=config.learning_rate, alpha=config.rmsprop_alpha,
                eps=config.optimizer_eps, foreach=True)
        else:
            self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate,
                                              eps=config.optimizer_eps, fused=True)
        self.rollout = self._new_rollout()
        self.lr_scale = 1.0
        self._autocast = config.bf16 and bf16_pays_off(device)
        self._generator = torch.Generator(device=device).manual_seed(config.seed)

    def start(self, obs: np.ndarray) -> None:
        """New games begin: the steps of the interrupted ones are not learned from."""
        self.rollout = self._new_rollout()

    def _new_rollout(self) -> Rollout:
        return Rollout(self.config.num_envs, self.config.n_steps, self.config.max_rollout_steps)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything an exact resume needs: weights, optimizer moments, sampling RNG."""
        tensors, meta = learner_state(self.network, self.optimizer)
        return {**tensors, "rng": self._generator.get_state()}, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        load_learner_state(self.network, self.optimizer, tensors, meta)
        self._generator.set_state(tensors["rng"])

    @torch.inference_mode()
    def act(self, obs: np.ndarray, agent_step: int) -> np.ndarray:
        # the torso as in the update; the heads stay fp32
        with bf16_autocast(self.device, self._autocast):
            logits, _ = self._forward(torch.from_numpy(obs).to(self.device))
        if self.config.action_selection == "argmax":
            actions = logits.argmax(dim=1)
        else:
            probs = torch.softmax(logits.float(), dim=1)
            actions = torch.multinomial(probs, 1, generator=self._generator).squeeze(1)
        return actions.cpu().numpy()

    def observe(self, obs: np.ndarray, step: Step, agent_step: int) -> dict[str, float] | None:
        self.rollout.add(obs, step)
        if not self.rollout.ready():
            return None
        progress = agent_step / self.config.steps
        return self.update(self.rollout.take(), step.obs, progress)

    def update(self, batch: RolloutBatch, next_obs: np.ndarray,
               progress: float) -> dict[str, float]:
        config = self.config
        lr = config.learning_rate * self.lr_scale
        if config.lr_schedule == "linear":
            lr = linear_schedule(lr, 0.0, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rows, envs = batch.actions.shape
        chunks = torch.from_numpy(batch.obs).to(self.device).flatten(0, 1).split(MAX_UPDATE_BATCH)
        with bf16_autocast(self.device, self._autocast):
            with torch.no_grad():
                _, last_values = self._forward(torch.from_numpy(next_obs).to(self.device))
            if len(chunks) == 1:  # every N-step rollout: one forward pass serves both uses
                outputs = [self._forward(chunks[0])]
                row_values = outputs[0][1].detach()
            else:  # long episode rollouts: values first, then gradients chunk by chunk
                with torch.no_grad():
                    row_values = torch.cat([self._forward(chunk)[1] for chunk in chunks])
        all_values = torch.cat([row_values.view(rows, envs), last_values[None]]).float().cpu()
        returns = nstep_returns(batch.rewards, batch.terminated, batch.truncated,
                                all_values.numpy(), config.gamma)
        flat_mask = batch.mask.reshape(-1)
        targets = [torch.from_numpy(a).to(self.device).flatten().split(MAX_UPDATE_BATCH)
                   for a in (batch.actions, returns, batch.mask)]
        total = max(int(flat_mask.sum()), 1)

        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, (actions, chunk_returns, mask) in enumerate(zip(*targets, strict=True)):
            if len(chunks) == 1:
                logits, values = outputs[0]
            else:
                with bf16_autocast(self.device, self._autocast):
                    logits, values = self._forward(chunks[i])
            weight = int(mask.sum()) / total
            loss, stats = a2c_loss(logits, values, actions, chunk_returns, mask,
                                   config.value_coef, config.entropy_coef)
            (loss * weight).backward()
            for name, value in stats.items():
                sums[name] = sums.get(name, 0.0) + float(value) * weight
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.max_grad_norm)
        self.optimizer.step()

        predicted = row_values.float().cpu().numpy().reshape(-1)[flat_mask]
        sums.update(
            explained_variance=explained_variance(predicted, returns.reshape(-1)[flat_mask]),
            grad_norm=float(grad_norm),
            learning_rate=lr,
            rollout_rows=float(rows),
        )
        return sums

ALGORITHM = register(Algorithm(
    name="a2c",
    title="A2C",
    config=A2CConfig,
    presets=PRESETS,
    make_agent=lambda config, num_actions, device: A2CAgent(config, num_actions, device),
    load_network=actor_critic_from,
    outputs=PROBABILITIES,
    figures=(
        POLICY_ENTROPY,
        FigureSpec("losses", "Losses (the critic's on a log scale)", (
            Panel("actor_loss", "actor loss"),
            Panel("critic_loss", "critic loss\n(squared return error)", log=True),
        )),
        STATE_VALUES,
    ),
    cliff=CliffSignals(loss="critic_loss", entropy="entropy",
                       watched=("actor_loss", "critic_loss", "entropy", "grad_norm",
                                "value_mean")),
))
