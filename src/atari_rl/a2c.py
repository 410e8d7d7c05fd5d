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

from atari_rl.checkpoints import learner_state, load_learner_state
from atari_rl.config import EPISODE, A2CConfig
from atari_rl.envs import Step
from atari_rl.maths import a2c_loss, explained_variance, linear_schedule, nstep_returns
from atari_rl.networks import ActorCritic, bf16_pays_off

MAX_UPDATE_BATCH = 2_048  # samples per forward/backward; bounds memory in episode mode


@dataclass
class RolloutBatch:
    """Rows [T, E] of a rollout and which of them are learned from."""

    obs: np.ndarray  # uint8 [T, E, 4, 84, 84]: the stack each action was taken in
    actions: np.ndarray  # int64 [T, E]
    rewards: np.ndarray  # float32 [T, E], clipped
    terminated: np.ndarray  # bool [T, E]
    truncated: np.ndarray  # bool [T, E]: truncation, or the end of a capped rollout
    mask: np.ndarray  # bool [T, E]: real transitions not learned from before


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
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                               np.ndarray]] = []
        self._consumed = np.zeros(num_envs, dtype=np.int64)  # rows below are learned already
        self._episode_ended = np.zeros(num_envs, dtype=bool)  # since the last update

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, obs: np.ndarray, step: Step) -> None:
        self._rows.append((obs, step.actions, step.reward, step.terminated, step.truncated,
                           step.first))
        self._episode_ended |= step.done & ~step.first

    def ready(self) -> bool:
        if len(self._rows) >= self.max_rows:
            return True
        return self.n_steps == EPISODE and bool(self._episode_ended.all())

    def take(self) -> RolloutBatch:
        obs, actions, rewards, terminated, truncated, first = (np.stack(c) for c in
                                                                zip(*self._rows, strict=True))
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
        return RolloutBatch(obs, actions, rewards, terminated, truncated, mask)


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
        with self._autocast_context():  # the torso as in the update; the heads stay fp32
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
        with self._autocast_context():
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
                with self._autocast_context():
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

    def _autocast_context(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast)

