"""The maths of learning, against hand computations."""

import math

import numpy as np
import pytest
import torch

from atari_rl.maths import (
    a2c_loss,
    double_dqn_targets,
    explained_variance,
    gae_advantages,
    linear_schedule,
    nstep_returns,
    ppo_loss,
)

GAMMA = 0.5  # a round discount keeps the hand computations exact


def column(values, dtype=np.float32):
    return np.array(values, dtype=dtype)[:, None]


def returns_of(rewards, values, terminated=(), truncated=()):
    steps = len(rewards)
    term = np.zeros((steps, 1), bool)
    trunc = np.zeros((steps, 1), bool)
    term[list(terminated)] = True
    trunc[list(truncated)] = True
    return nstep_returns(column(rewards), term, trunc, column(values), GAMMA)[:, 0]


def test_terminal_in_the_middle_cuts_the_bootstrap():
    # V(s0..s4) = 10..50; the episode ends at t=1, a new one runs t=2..3 to the rollout's end.
    got = returns_of([1, 2, 3, 4], [10, 20, 30, 40, 50], terminated=[1])
    # R3 = 4 + .5*50 = 29; R2 = 3 + .5*29 = 17.5; R1 = 2 (terminal); R0 = 1 + .5*2 = 2
    np.testing.assert_allclose(got, [2.0, 2.0, 17.5, 29.0])


def test_truncation_bootstraps_from_the_state_after_it():
    got = returns_of([1, 2, 3, 4], [10, 20, 30, 40, 50], truncated=[1])
    # R1 = 2 + .5*V(s2) = 17; R0 = 1 + .5*17 = 9.5; the rest as above
    np.testing.assert_allclose(got, [9.5, 17.0, 17.5, 29.0])


def test_one_step_is_td0():
    np.testing.assert_allclose(returns_of([3], [7, 8]), [3 + GAMMA * 8])


def test_rollout_length_n_uses_only_the_last_value():
    got = returns_of([1, 2, 4], [100, 200, 300, 8])
    # R0 = 1 + .5*2 + .25*4 + .125*8 = 4
    np.testing.assert_allclose(got, [4.0, 6.0, 8.0])


def test_whole_episode_is_monte_carlo():
    # N = episode: the rollout ends at the terminal, no value enters any target.
    got = returns_of([1, 0, 2, 4], [1e6, 1e6, 1e6, 1e6, 1e6], terminated=[3])
    np.testing.assert_allclose(got, [1 + 0.25 * 2 + 0.125 * 4, 0 + 0.5 * 2 + 0.25 * 4, 4.0, 4.0])


def write_up_returns(rewards, values):
    """The write-up's mistake: the critic's estimate of every intermediate state in the target."""
    steps = len(rewards)
    return np.array([
        sum(GAMMA ** (k - t) * rewards[k] for k in range(t, steps))
        + sum(GAMMA ** (k - t) * values[k] for k in range(t + 1, steps + 1))
        for t in range(steps)
    ])


def test_write_up_formula_gives_a_different_target():
    rewards, values = [1, 2, 4], [100, 200, 300, 8]
    right = returns_of(rewards, values)
    wrong = write_up_returns(rewards, values)
    assert wrong[-1] == pytest.approx(right[-1])  # they agree only on the last step
    assert not np.allclose(wrong[:-1], right[:-1])
    assert wrong[0] == pytest.approx(4.0 + 0.5 * 200 + 0.25 * 300)


def test_envs_are_independent_columns():
    rewards = np.array([[1, 1], [1, 1]], np.float32)
    term = np.array([[True, False], [False, False]])
    values = np.array([[0, 0], [0, 0], [2, 2]], np.float32)
    got = nstep_returns(rewards, term, np.zeros_like(term), values, GAMMA)
    np.testing.assert_allclose(got[:, 0], [1.0, 2.0])
    np.testing.assert_allclose(got[:, 1], [1 + 0.5 * 2.0, 2.0])


def step_a2c(logits, values, returns, *, value_coef=0.0, entropy_coef=0.0, lr=0.1):
    logits = torch.as_tensor(logits, dtype=torch.float32).clone().requires_grad_()
    values = torch.as_tensor(values, dtype=torch.float32).clone().requires_grad_()
    actions = torch.zeros(logits.shape[0], dtype=torch.int64)
    mask = torch.ones(logits.shape[0], dtype=torch.bool)
    loss, _ = a2c_loss(logits, values, actions, torch.tensor(returns), mask, value_coef,
                       entropy_coef)
    loss.backward()
    with torch.no_grad():
        return logits - lr * logits.grad, values - lr * values.grad


def test_positive_advantage_raises_the_probability_of_its_action():
    before = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    after, _ = step_a2c(before, [0.0], [1.0])
    assert torch.softmax(after, 1)[0, 0] > torch.softmax(before, 1)[0, 0]
    after, _ = step_a2c(before, [0.0], [-1.0])
    assert torch.softmax(after, 1)[0, 0] < torch.softmax(before, 1)[0, 0]


def test_entropy_alone_pushes_toward_uniform():
    before = torch.tensor([[3.0, 0.0, -1.0, 0.5]])
    after, _ = step_a2c(before, [1.0], [1.0], entropy_coef=1.0)  # zero advantage
    entropy = lambda x: -(torch.softmax(x, 1) * torch.log_softmax(x, 1)).sum()  # noqa: E731
    assert entropy(after) > entropy(before)


def test_critic_alone_moves_the_value_toward_the_return():
    logits = [[0.0, 0.0]]
    _, after = step_a2c(logits, [0.0], [2.0], value_coef=0.5)
    assert 0.0 < float(after[0]) < 2.0
    _, after = step_a2c(logits, [5.0], [2.0], value_coef=0.5)
    assert 2.0 < float(after[0]) < 5.0


def test_masked_rows_do_not_count():
    logits = torch.zeros(2, 3, requires_grad=True)
    values = torch.zeros(2, requires_grad=True)
    loss, _ = a2c_loss(logits, values, torch.tensor([0, 1]), torch.tensor([1.0, 5.0]),
                       torch.tensor([True, False]), 0.5, 0.01)
    loss.backward()
    assert torch.all(logits.grad[1] == 0) and values.grad[1] == 0
    assert torch.any(logits.grad[0] != 0)


def gae_of(rewards, values, lam, terminated=(), truncated=()):
    steps = len(rewards)
    term = np.zeros((steps, 1), bool)
    trunc = np.zeros((steps, 1), bool)
    term[list(terminated)] = True
    trunc[list(truncated)] = True
    advantages, returns = gae_advantages(column(rewards), term, trunc, column(values), GAMMA, lam)
    return advantages[:, 0], returns[:, 0]


def test_gae_lambda_zero_is_the_td_error():
    rewards = np.array([[1, 1], [2, 1], [3, 1]], np.float32)
    values = np.array([[10, 0], [20, 0], [30, 0], [40, 4]], np.float32)
    no_end = np.zeros((3, 2), bool)
    advantages, returns = gae_advantages(rewards, no_end, no_end, values, GAMMA, 0.0)
    # delta = r + .5*V(s') - V(s): 1 + 10 - 10, 2 + 15 - 20, 3 + 20 - 30; column 1: 1, 1, 1 + 2
    np.testing.assert_allclose(advantages, [[1.0, 1.0], [-3.0, 1.0], [-7.0, 3.0]])
    np.testing.assert_allclose(returns, [[11.0, 1.0], [17.0, 1.0], [23.0, 3.0]])


def test_gae_lambda_one_is_the_nstep_return_minus_the_value():
    advantages, returns = gae_of([1, 2, 4], [100, 200, 300, 8], lam=1.0)
    # the n-step returns 4, 6, 8 of test_rollout_length_n_uses_only_the_last_value
    np.testing.assert_allclose(returns, [4.0, 6.0, 8.0])
    np.testing.assert_allclose(advantages, [4.0 - 100, 6.0 - 200, 8.0 - 300])


@pytest.mark.parametrize("end_probability", [0.0, 0.2])
def test_gae_lambda_one_equals_nstep_returns_on_random_rollouts(end_probability):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(16, 3)).astype(np.float32)
    values = rng.normal(size=(17, 3)).astype(np.float32)
    terminated = rng.random((16, 3)) < end_probability
    truncated = rng.random((16, 3)) < end_probability
    _, returns = gae_advantages(rewards, terminated, truncated, values, 0.9, 1.0)
    expected = nstep_returns(rewards, terminated, truncated, values, 0.9)
    np.testing.assert_allclose(returns, expected, rtol=1e-5, atol=1e-5)


def test_gae_terminal_in_the_middle_stops_the_recursion():
    # gamma = lam = .5, so each step carries .25 of the next advantage
    advantages, returns = gae_of([1, 2, 3, 4], [10, 20, 30, 40, 50], lam=0.5, terminated=[1])
    # A3 = 4 + 25 - 40 = -11; A2 = (3 + 20 - 30) + .25*-11 = -9.75
    # A1 = 2 - 20 = -18, nothing after the terminal; A0 = (1 + 10 - 10) + .25*-18 = -3.5
    np.testing.assert_allclose(advantages, [-3.5, -18.0, -9.75, -11.0])
    np.testing.assert_allclose(returns, [6.5, 2.0, 20.25, 29.0])  # R1 is the reward alone


def test_gae_truncation_bootstraps_from_the_state_after_it():
    advantages, returns = gae_of([1, 2, 3, 4], [10, 20, 30, 40, 50], lam=0.5, truncated=[1])
    # A1 = 2 + .5*V(s2) - 20 = -3, nothing carried across; A0 = 1 + .25*-3 = .25
    np.testing.assert_allclose(advantages, [0.25, -3.0, -9.75, -11.0])
    np.testing.assert_allclose(returns, [10.25, 17.0, 20.25, 29.0])
    # the next episode's rewards do not reach back across the truncation
    later, _ = gae_of([1, 2, 99, -99], [10, 20, 30, 40, 50], lam=0.5, truncated=[1])
    np.testing.assert_allclose(later[:2], advantages[:2])


def test_gae_returns_are_advantages_plus_values():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(4, 2))
    values = rng.normal(size=(5, 2))
    terminated = np.array([[False, True], [False, False], [True, False], [False, False]])
    truncated = np.array([[False, False], [True, False], [False, False], [False, True]])
    advantages, returns = gae_advantages(rewards, terminated, truncated, values, 0.99, 0.95)
    assert advantages.dtype == returns.dtype == np.float32
    np.testing.assert_allclose(returns, advantages + values[:4].astype(np.float32), rtol=1e-6)


def test_gae_rejects_values_without_the_bootstrap_row():
    no_end = np.zeros((3, 2), bool)
    with pytest.raises(ValueError, match=r"values \[T \+ 1, E\]"):
        gae_advantages(np.zeros((3, 2)), no_end, no_end, np.zeros((3, 2)), GAMMA, 0.95)


def ppo_of(logits, log_ratio, advantages, *, actions=None, values=None, returns=None,
           old_values=None, clip_range=0.2, value_coef=0.0, entropy_coef=0.0,
           value_clip_range=None):
    """ppo_loss with old_log_probs = log pi(a|s) - log_ratio, and the gradient w.r.t. logits."""
    logits = torch.as_tensor(logits, dtype=torch.float32).clone().requires_grad_()
    batch = logits.shape[0]
    actions = torch.zeros(batch, dtype=torch.int64) if actions is None else actions
    log_probs = torch.log_softmax(logits.detach(), 1).gather(1, actions[:, None]).squeeze(1)
    old_log_probs = log_probs - torch.as_tensor(log_ratio, dtype=torch.float32)
    zeros = torch.zeros(batch)
    loss, stats = ppo_loss(
        logits,
        zeros if values is None else torch.tensor(values),
        actions,
        old_log_probs,
        torch.as_tensor(advantages, dtype=torch.float32),
        zeros if returns is None else torch.tensor(returns),
        zeros if old_values is None else torch.tensor(old_values),
        clip_range,
        value_coef,
        entropy_coef,
        value_clip_range,
    )
    loss.backward()
    return loss.detach(), stats, logits.grad


def test_ppo_at_ratio_one_is_the_plain_policy_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    actions = torch.tensor([0, 1, 2, 3, 1, 0])
    advantages = torch.randn(6) * 3 + 1
    _, stats, grad = ppo_of(logits, torch.zeros(6), advantages, actions=actions)

    normalized = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    plain = logits.clone().requires_grad_()
    log_probs = torch.log_softmax(plain, 1).gather(1, actions[:, None]).squeeze(1)
    (-(log_probs * normalized).mean()).backward()
    torch.testing.assert_close(grad, plain.grad)
    assert stats["approx_kl"] == 0.0 and stats["clip_fraction"] == 0.0


def test_ppo_clipping_stops_the_gradient_only_on_the_side_the_advantage_favours():
    # log ratio +1 (ratio e) and -1 (ratio 1/e) are both outside [0.8, 1.2]
    log_ratio = [1.0, -1.0, 0.0, 0.0, -1.0, 1.0]
    advantages = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]  # already mean 0, std 1
    _, _, grad = ppo_of(torch.zeros(6, 3), log_ratio, advantages)
    assert torch.all(grad[0] == 0)  # A > 0, ratio > 1 + eps: moved far enough
    assert torch.all(grad[1] == 0)  # A < 0, ratio < 1 - eps: likewise
    assert torch.all(grad[2:4].abs().sum(1) > 0)  # inside the range
    assert torch.all(grad[4:].abs().sum(1) > 0)  # moved the wrong way: never clipped


def test_ppo_approx_kl_and_clip_fraction_by_hand():
    log_ratio = [0.0, 0.1, -0.1, 0.5, -0.5]
    _, stats, _ = ppo_of(torch.zeros(5, 3), log_ratio, [1.0, -1.0, 1.0, -1.0, 0.0])
    # |ratio - 1| = 0, .105, .095, .649, .393 against clip_range .2: two of five
    assert float(stats["clip_fraction"]) == pytest.approx(0.4)
    kl = sum(math.exp(x) - 1 - x for x in log_ratio) / 5
    assert float(stats["approx_kl"]) == pytest.approx(kl, rel=1e-5)


def test_ppo_value_clipping_takes_the_larger_error():
    values, old_values, returns = [5.0, 5.0, 0.5, 0.0], [0.0] * 4, [10.0, -10.0, 2.0, 0.0]
    common = dict(values=values, old_values=old_values, returns=returns)
    _, clipped, _ = ppo_of(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4),
                           value_clip_range=1.0, **common)
    # V clipped to old_V +- 1 = 1, 1, .5, 0
    # errors max(25, 81) = 81, max(225, 121) = 225, 2.25 (inside), 0
    assert float(clipped["value_loss"]) == pytest.approx(0.5 * (81 + 225 + 2.25 + 0) / 4)
    _, plain, _ = ppo_of(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4), **common)
    assert float(plain["value_loss"]) == pytest.approx(0.5 * (25 + 225 + 2.25 + 0) / 4)
    assert float(plain["value_mean"]) == pytest.approx(2.625)


def test_ppo_loss_is_policy_plus_value_minus_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 1.0]])
    loss, stats, _ = ppo_of(logits, [0.1, -0.3], [1.0, -2.0], values=[1.0, 2.0],
                            returns=[0.0, 0.0], value_coef=0.5, entropy_coef=0.01)
    expected = stats["policy_loss"] + 0.5 * stats["value_loss"] - 0.01 * stats["entropy"]
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["max_action_prob"],
                               torch.softmax(logits, 1).max(1).values.mean())


def test_ppo_advantage_scale_does_not_change_the_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0]])
    log_ratio = [0.1, -0.3, 0.05]
    advantages = torch.tensor([1.0, -2.0, 0.5])
    base, _, _ = ppo_of(logits, log_ratio, advantages, entropy_coef=0.01)
    scaled, _, _ = ppo_of(logits, log_ratio, advantages * 10, entropy_coef=0.01)
    shifted, _, _ = ppo_of(logits, log_ratio, advantages + 5, entropy_coef=0.01)
    torch.testing.assert_close(scaled, base)
    torch.testing.assert_close(shifted, base)


def test_ppo_computes_in_float32_under_bf16():
    logits = torch.zeros(2, 3, dtype=torch.bfloat16)
    vector = torch.zeros(2, dtype=torch.bfloat16)
    loss, stats = ppo_loss(logits, vector, torch.tensor([0, 1]), torch.full((2,), -1.0986),
                           torch.tensor([1.0, -1.0]), torch.ones(2), vector, 0.2, 0.5, 0.01, None)
    assert loss.dtype == torch.float32
    assert float(stats["value_loss"]) == pytest.approx(0.5)


def test_ppo_rejects_a_column_of_values():
    with pytest.raises(ValueError, match="ppo_loss"):
        ppo_loss(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64),
                 torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.2, 0.5, 0.01,
                 None)


def test_double_dqn_target_uses_online_argmax_and_target_value():
    online = torch.tensor([[1.0, 5.0, 2.0], [9.0, 0.0, 1.0]])
    target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    got = double_dqn_targets(torch.tensor([1.0, 2.0]), torch.tensor([0.9, 0.0]), online, target)
    # row 0: online picks action 1, target values it 20 -> 1 + .9*20; row 1 is terminal.
    torch.testing.assert_close(got, torch.tensor([19.0, 2.0]))


def test_explained_variance():
    target = np.array([1.0, 2.0, 3.0])
    assert explained_variance(target, target) == pytest.approx(1.0)
    assert explained_variance(np.full(3, 2.0), target) == pytest.approx(0.0)


def test_linear_schedule_holds_at_the_end():
    assert linear_schedule(1.0, 0.1, 0.0) == 1.0
    assert linear_schedule(1.0, 0.1, 0.5) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 2.0) == pytest.approx(0.1)
