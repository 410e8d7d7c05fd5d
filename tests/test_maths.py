"""The maths of learning, against hand computations."""

import numpy as np
import pytest
import torch

from atari_rl.maths import (
    a2c_loss,
    double_dqn_targets,
    explained_variance,
    linear_schedule,
    nstep_returns,
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
