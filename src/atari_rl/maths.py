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
