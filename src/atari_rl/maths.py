"""Pure functions for the maths of learning: returns, targets, losses, schedules.

Kept free of environments and training loops so that each can be checked by hand.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def nstep_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    values: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """Discounted returns of a rollout, bootstrapped from the critic at its end only.

    Shapes: rewards, terminated, truncated [T, E]; values [T + 1, E], where values[t] is
    V(s_t) and values[T] is V of the state after the rollout. The target of step t is
    the discounted sum of the real rewards up to the end of the rollout plus the value of
    the last state: R_T = V(s_T), R_t = r_t + gamma * R_{t+1}. No value of an intermediate
    state enters a target (the mistake of the write-up this project answers), except the
    state right after a truncation, where the episode was cut short rather than ended:
    R_t = r_t + gamma * V(s_{t+1}). A terminal step gets R_t = r_t.

    With the NEXT_STEP autoreset of the pipeline, s_{t+1} after a truncation is the
    truncated episode's last state, so values[t + 1] is the right bootstrap.
    """
    steps = rewards.shape[0]
    returns = np.empty(rewards.shape, dtype=np.float32)
    next_return = values[steps].astype(np.float32)
    for t in reversed(range(steps)):
        continuation = np.where(truncated[t], values[t + 1], next_return)
        next_return = rewards[t] + gamma * np.where(terminated[t], 0.0, continuation)
        returns[t] = next_return
    return returns


def a2c_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Actor-critic loss over the real transitions of a rollout (mask = 1).

    actor = -log pi(a|s) * A with the advantage A = R - V(s) held constant, so the actor
    does not push the critic; critic = (R - V(s))^2; the entropy bonus keeps the policy
    from collapsing onto one action before it has learned which one is right.
    """
    weight = mask.float()
    count = weight.sum().clamp_min(1.0)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp()
    values = values.float()
    advantages = (returns - values).detach()
    actor = -(log_probs.gather(1, actions[:, None]).squeeze(1) * advantages * weight).sum() / count
    critic = ((returns - values).pow(2) * weight).sum() / count
    entropy = (-(probs * log_probs).sum(-1) * weight).sum() / count
    loss = actor + value_coef * critic - entropy_coef * entropy
    stats = {
        "actor_loss": actor.detach(),
        "critic_loss": critic.detach(),
        "entropy": entropy.detach(),
        "value_mean": (values.detach() * weight).sum() / count,
        "max_action_prob": (probs.detach().max(-1).values * weight).sum() / count,
    }
    return loss, stats


def gae_advantages(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    values: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation (Schulman et al. 2016): (advantages, returns).

    Shapes as in `nstep_returns`: rewards, terminated, truncated [T, E]; values [T + 1, E].
    A_t is the lam-weighted sum of one-step TD errors
    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t), A_t = delta_t + gamma * lam * A_{t+1}, so
    lam trades bias for variance: lam = 0 is the TD error alone (the critic's bias), lam = 1
    is the n-step return of `nstep_returns` minus V(s_t) (all the rewards' variance).

    At an episode end the recursion stops, because the advantages of the next episode say
    nothing about this one. The two ends differ in delta_t only: a terminal step has no
    future, so delta_t = r_t - V(s_t); a truncated step was cut short with a future the
    rollout never saw, so delta_t bootstraps from values[t + 1], which under the pipeline's
    NEXT_STEP autoreset is V of the truncated episode's last state. The returns,
    advantages + values[:T], are the critic's targets: with lam = 1 they equal
    `nstep_returns`, with lam < 1 they are the TD(lam) returns.
    """
    steps = rewards.shape[0]
    if (
        terminated.shape != rewards.shape
        or truncated.shape != rewards.shape
        or values.shape != (steps + 1, *rewards.shape[1:])
    ):
        raise ValueError(
            "gae_advantages: rewards, terminated, truncated must be [T, E] and values "
            f"[T + 1, E]; got {rewards.shape}, {terminated.shape}, {truncated.shape}, "
            f"{values.shape}"
        )
    values = values.astype(np.float32)
    advantages = np.empty(rewards.shape, dtype=np.float32)
    next_advantage = np.zeros(rewards.shape[1:], dtype=np.float32)
    for t in reversed(range(steps)):
        next_value = np.where(terminated[t], 0.0, values[t + 1])
        delta = rewards[t] + gamma * next_value - values[t]
        carried = np.where(terminated[t] | truncated[t], 0.0, next_advantage)
        next_advantage = delta + gamma * lam * carried
        advantages[t] = next_advantage
    return advantages, advantages + values[:steps]


def ppo_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    clip_range: float,
    value_coef: float,
    entropy_coef: float,
    value_clip_range: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate loss over one minibatch (Schulman et al. 2017).

    Shapes: logits [B, A]; the rest [B]. old_log_probs, old_values and the advantages come
    from the policy that collected the rollout. The policy term is
    -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)) with ratio = pi(a|s) / pi_old(a|s):
    the min makes it a pessimistic bound, so clipping removes the incentive to move a
    probability further once it has moved eps in the direction its advantage favours (the
    gradient of that sample is zero), but never hides a change that made things worse. That
    is what lets PPO take several epochs of steps on one rollout.

    The advantages are normalized here, per minibatch, so that the step size of the policy
    does not depend on the scale of a game's rewards. The population std is used, so a
    minibatch of one gives a zero advantage instead of NaN.

    The critic's loss is 0.5 * (V - R)^2, or with value_clip_range c, CleanRL's `ppo_atari`
    form: the larger of that error and the error of old_V + clip(V - old_V, -c, c), the same
    pessimistic bound for the critic. It is optional because it rarely helps (Engstrom et
    al. 2020) and c is in the units of the returns.

    Computed in float32 from logits.float() and values.float(), since the network may run
    under bf16 autocast. The stats are detached: approx_kl is the (ratio - 1) - log ratio
    estimator of KL(pi_old || pi) (Schulman's k3, as CleanRL), unbiased and never negative;
    clip_fraction is the fraction of samples with |ratio - 1| > clip_range.
    """
    batch = logits.shape[0]
    vectors = {
        "values": values,
        "actions": actions,
        "old_log_probs": old_log_probs,
        "advantages": advantages,
        "returns": returns,
        "old_values": old_values,
    }
    wrong = {name: tuple(x.shape) for name, x in vectors.items() if x.shape != (batch,)}
    if logits.dim() != 2 or wrong:
        raise ValueError(
            f"ppo_loss: logits must be [B, A] and the rest [B]; got logits "
            f"{tuple(logits.shape)} and {wrong}"
        )
    all_log_probs = F.log_softmax(logits.float(), dim=-1)
    probs = all_log_probs.exp()
    values = values.float()
    returns = returns.float()
    advantages = advantages.float()
    advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)

    log_ratio = all_log_probs.gather(1, actions[:, None]).squeeze(1) - old_log_probs.float()
    ratio = log_ratio.exp()
    clipped_ratio = ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    policy = -torch.min(ratio * advantages, clipped_ratio * advantages).mean()

    value_error = (values - returns).pow(2)
    if value_clip_range is not None:
        old_values = old_values.float()
        clipped = old_values + (values - old_values).clamp(-value_clip_range, value_clip_range)
        value_error = torch.max(value_error, (clipped - returns).pow(2))
    value = 0.5 * value_error.mean()

    entropy = -(probs * all_log_probs).sum(-1).mean()
    loss = policy + value_coef * value - entropy_coef * entropy
    with torch.no_grad():
        stats = {
            "policy_loss": policy.detach(),
            "value_loss": value.detach(),
            "entropy": entropy.detach(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "max_action_prob": probs.max(-1).values.mean(),
            "value_mean": values.mean(),
        }
    return loss, stats


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect critic, 0 a constant one."""
    with np.errstate(all="ignore"):  # a diverging critic is reported, not warned about
        variance = float(np.var(target))
        if variance == 0.0 or not np.isfinite(variance):
            return float("nan")
        return 1.0 - float(np.var(target - predicted)) / variance


def double_dqn_targets(
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
) -> torch.Tensor:
    """returns + discount * Q_target(s', argmax_a Q_online(s', a)).

    The online network chooses the next action and the target network values it, which
    removes most of the overestimation of plain Q-learning (van Hasselt et al. 2016).
    `discounts` is gamma**n, or 0 where the episode terminated inside the n-step window.
    """
    best = next_q_online.argmax(dim=1, keepdim=True)
    return returns + discounts * next_q_target.gather(1, best).squeeze(1)


def linear_schedule(start: float, end: float, progress: float) -> float:
    """Interpolate from start to end as progress goes from 0 to 1, then hold at end."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress
