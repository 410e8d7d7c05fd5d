"""Double DQN: its target by hand, its schedules, its memory check, and learning a tiny task.

The tiny task runs through the shared training loop with a fake vector env that speaks the
pipeline's conventions (84x84 uint8 stacks, reset steps flagged `first`), so the replay
memory, the Double DQN target and the target network all have to work for it to pass.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from atari_rl import cli
from atari_rl.checkpoints import load_checkpoint, load_tensors, save_checkpoint
from atari_rl.config import resolve
from atari_rl.dqn import (
    LAST_LAYERS,
    DQNAgent,
    DQNConfig,
    epsilon,
    q_values,
    replay_memory,
    td_loss,
)
from atari_rl.envs import Episode, Step
from atari_rl.maths import double_dqn_targets
from atari_rl.networks import QNetwork
from atari_rl.replay import Batch
from atari_rl.run_files import FINAL_POLICY
from atari_rl.training import train


def test_double_dqn_target_matches_a_hand_computation() -> None:
    returns = torch.tensor([1.0, 0.5, 2.0])
    discounts = torch.tensor([0.99, 0.99**3, 0.0])  # the last transition terminated
    next_q_online = torch.tensor([[1.0, 3.0, 2.0],  # online picks action 1
                                  [5.0, 0.0, 4.0],  # online picks action 0
                                  [0.0, 9.0, 0.0]])
    next_q_target = torch.tensor([[10.0, -2.0, 7.0],  # target values action 1 at -2, not 10
                                  [1.5, 8.0, 0.0],
                                  [4.0, 4.0, 4.0]])
    expected = torch.tensor([1.0 + 0.99 * -2.0, 0.5 + 0.99**3 * 1.5, 2.0])
    targets = double_dqn_targets(returns, discounts, next_q_online, next_q_target)
    torch.testing.assert_close(targets, expected)


class FixedQ(nn.Module):
    """A 'network' that returns given Q-values for each row; its one weight scales them."""

    def __init__(self, q: list[list[float]]):
        super().__init__()
        self.q = torch.tensor(q)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q[obs[:, 0, 0, 0].long()] * self.scale


def test_td_loss_uses_online_argmax_target_value_and_huber() -> None:
    # Row 0 is s, row 1 is s'. Online prefers action 0 in s' (Q 2.0), the target values it
    # at 0.5 although its own best is 3.0: the Double DQN target is 1 + 0.9 * 0.5 = 1.45.
    online = FixedQ([[1.0, 4.0], [2.0, 1.0]])
    target = FixedQ([[0.0, 0.0], [0.5, 3.0]])
    obs = torch.zeros(2, 4, 84, 84, dtype=torch.uint8)
    next_obs = torch.ones(2, 4, 84, 84, dtype=torch.uint8)
    actions = torch.tensor([0, 1])
    returns = torch.tensor([1.0, 1.0])
    discounts = torch.tensor([0.9, 0.0])  # the second transition terminated
    loss, q_taken, targets = td_loss(online, target, obs, actions, returns, next_obs, discounts)
    torch.testing.assert_close(targets, torch.tensor([1.45, 1.0]))
    torch.testing.assert_close(q_taken, torch.tensor([1.0, 4.0]))
    # Huber: quadratic below an error of 1 (0.5 * 0.45^2), linear above it (3.0 - 0.5).
    assert float(loss.detach()) == pytest.approx((0.5 * 0.45**2 + 2.5) / 2)
    loss.backward()
    assert online.scale.grad is not None and target.scale.grad is None
    # Importance weights scale each sample's loss before the mean: weight 0 drops the second.
    weighted, _, _ = td_loss(online, target, obs, actions, returns, next_obs, discounts,
                             weights=torch.tensor([0.5, 0.0]))
    assert float(weighted) == pytest.approx(0.5 * (0.5 * 0.45**2) / 2)


def random_batch(size: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(obs=rng.integers(0, 256, (size, 4, 84, 84), np.uint8),
                 actions=rng.integers(0, NUM_ACTIONS, size),
                 returns=rng.normal(size=size).astype(np.float32),
                 next_obs=rng.integers(0, 256, (size, 4, 84, 84), np.uint8),
                 discounts=rng.choice([0.0, 0.99], size).astype(np.float32))


@pytest.mark.parametrize("dueling", [False, True])
def test_bf16_q_values_stay_close_to_the_networks_own(dueling: bool) -> None:
    torch.manual_seed(0)
    network = QNetwork(4, dueling=dueling)
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        exact = network(obs)
        torch.testing.assert_close(q_values(network, obs, bf16=False), exact)
        fast = q_values(network, obs, bf16=True)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, exact, atol=0.02, rtol=0.02)


def test_epsilon_decays_linearly_then_holds() -> None:
    config = DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_steps=1_000)
    assert epsilon(config, 0) == 1.0
    assert epsilon(config, 500) == pytest.approx(0.55)
    assert epsilon(config, 1_000) == pytest.approx(0.1)
    assert epsilon(config, 10_000) == pytest.approx(0.1)


def test_presets_resolve_to_their_settings() -> None:
    nature = resolve(None, "dqn-nature", {})
    assert (nature.algo, nature.num_envs, nature.buffer_size, nature.batch_size,
            nature.train_freq, nature.target_update, nature.n_steps) == (
        "dqn", 1, 1_000_000, 32, 4, 10_000, 1)
    fast = resolve("dqn", "dqn-fast", {"steps": 1_000_000})
    assert fast == DQNConfig(steps=1_000_000, preset="dqn-fast")


@pytest.mark.parametrize(
    ("overrides", "option"),
    [({"n_steps": "episode"}, "--n-steps"), ({"batch_size": 0}, "--batch-size"),
     ({"train_freq": 0}, "--train-freq"), ({"buffer_size": 400}, "--buffer-size"),
     ({"replay_codec": "gzip"}, "--replay-codec"), ({"reset_every": -1}, "--reset-every")],
)
def test_bad_options_are_refused_in_one_line(overrides: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option) as error:
        resolve("dqn", None, overrides)
    assert "\n" not in str(error.value)


def test_a_replay_memory_too_big_for_this_machine_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--algo", "dqn", "--buffer-size", "10000000000",
                     "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "GB" in err and "--buffer-size" in err
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []


# --- learning a tiny task -------------------------------------------------------------

DARK, BRIGHT, GOOD, BAD = 40, 200, 120, 0
NUM_ACTIONS = 3
RIGHT_ACTION = {DARK: 0, BRIGHT: 2}


class ChoiceEnv:
    """Two-step episodes: the right action on the first screen leads to a rewarded screen.

    The first screen is dark or bright; the right action for it (0 when dark, 2 when bright)
    leads to a GOOD screen, any other to a BAD one, and there any action ends the episode
    with reward 1 on GOOD and 0 on BAD. The first choice earns nothing at once, so it is
    learned only by bootstrapping through the target network. After each episode comes a
    reset step (`first`), as in `AtariPipeline`.
    """

    num_actions = NUM_ACTIONS

    def __init__(self, num_envs: int, seed: int = 0):
        self.num_envs = num_envs
        self._rng = np.random.default_rng(seed)
        self._stack = np.zeros((num_envs, 4, 84, 84), np.uint8)
        self._screen = np.zeros(num_envs, np.int64)
        self._pending_reset = np.zeros(num_envs, bool)
        self._score = np.zeros(num_envs)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        for env in range(self.num_envs):
            self._start(env)
        self._pending_reset[:] = False
        return self._stack.copy()

    def step(self, actions: np.ndarray) -> Step:
        n = self.num_envs
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        first = self._pending_reset.copy()
        games = []
        for env in range(n):
            if first[env]:
                self._start(env)
                continue
            screen = self._screen[env]
            if screen in RIGHT_ACTION:
                self._push(env, GOOD if actions[env] == RIGHT_ACTION[screen] else BAD)
            else:
                reward[env] = float(screen == GOOD)
                terminated[env] = True
                self._push(env, screen)
                games.append(Episode(env, self._score[env] + reward[env], 2))
            self._score[env] += reward[env]
        self._pending_reset = terminated.copy()
        return Step(obs=self._stack.copy(), reward=reward, raw_reward=reward.copy(),
                    terminated=terminated, truncated=np.zeros(n, bool), first=first,
                    actions=np.asarray(actions, np.int64), games=games, episodes=games)

    def close(self) -> None:
        pass

    def _start(self, env: int) -> None:
        self._screen[env] = DARK if self._rng.random() < 0.5 else BRIGHT
        self._stack[env] = self._screen[env]
        self._score[env] = 0.0

    def _push(self, env: int, screen: int) -> None:
        self._screen[env] = screen
        self._stack[env, :-1] = self._stack[env, 1:].copy()
        self._stack[env, -1] = screen


def tiny_config(**changes: object) -> DQNConfig:
    """The choice task's settings. bf16 is off so that every CPU computes the same path
    (it is on only where the CPU has AVX-512 BF16 or AMX), and Adam's 5e-4 learns the task
    on every seed and variant tried (0-3, plain, dueling, speed options, prioritized):
    1e-3 left the dueling Q-values 40% off on an AVX2 CPU."""
    settings = dict(
        steps=1_600, num_envs=4, seed=0, torch_threads=1, device="cpu", buffer_size=4_000,
        learning_starts=200, batch_size=16, train_freq=8, target_update=200, n_steps=1,
        gamma=0.9, learning_rate=5e-4, optimizer_eps=1e-8, epsilon_steps=800,
        epsilon_end=0.05, compile=False, bf16=False, log_every=400,
    )
    settings.update(changes)
    config = DQNConfig(**settings)  # type: ignore[arg-type]
    config.validate()
    return config


def greedy_q(run_dir: Path, dueling: bool = False) -> dict[int, np.ndarray]:
    network = QNetwork(NUM_ACTIONS, dueling=dueling)
    network.load_state_dict(load_tensors(run_dir / FINAL_POLICY))
    screens = [DARK, BRIGHT, GOOD, BAD]
    obs = np.stack([np.full((4, 84, 84), s, np.uint8) for s in screens])
    obs[2:, :3] = DARK  # the second screen comes after a first one in the stack
    with torch.no_grad():
        q = network(torch.from_numpy(obs)).numpy()
    return dict(zip(screens, q, strict=True))


SPEED_OPTIONS = {"prefetch": True, "compile_step": True}


@pytest.mark.parametrize(("dueling", "options"),
                         [(False, {}), (True, {}), (False, SPEED_OPTIONS),
                          (False, {"prioritized": True})],
                         ids=["plain", "dueling", "speed-options", "prioritized"])
def test_learns_the_right_first_choice_by_bootstrapping(tmp_path: Path, dueling: bool,
                                                        options: dict[str, object]) -> None:
    config = tiny_config(dueling=dueling, **options)
    summary = train(config, tmp_path, ChoiceEnv(config.num_envs))  # type: ignore[arg-type]
    q = greedy_q(tmp_path, dueling)
    assert int(q[DARK].argmax()) == RIGHT_ACTION[DARK]
    assert int(q[BRIGHT].argmax()) == RIGHT_ACTION[BRIGHT]
    # The right first choice is worth the discounted reward that follows it (gamma = 0.9),
    # which only a working bootstrap can tell; the second screens are worth 1 and 0.
    assert q[DARK].max() > 0.5 and q[BRIGHT].max() > 0.5
    assert q[GOOD].mean() == pytest.approx(1.0, abs=0.3)
    assert np.abs(q[BAD]).max() < 0.3
    assert summary["score_mean20"] >= 0.8  # random play scores 1/3


def started_agent(config: DQNConfig) -> tuple[DQNAgent, ChoiceEnv, np.ndarray]:
    """A fresh agent on the choice task, its games started; returns their first stacks."""
    agent = DQNAgent(config, NUM_ACTIONS, torch.device("cpu"))
    env = ChoiceEnv(config.num_envs)
    obs = env.reset()
    agent.start(obs)
    return agent, env, obs


def test_target_network_follows_the_online_network_every_target_update_steps() -> None:
    config = tiny_config(target_update=40, learning_starts=16, batch_size=4, train_freq=4)
    agent, env, obs = started_agent(config)

    def same() -> bool:
        return all(torch.equal(a, b) for a, b in
                   zip(agent.network.parameters(), agent.target.parameters(), strict=True))

    agent_step = 0
    history = []
    while agent_step < 80:
        step = env.step(agent.act(obs, agent_step))
        agent_step += env.num_envs
        agent.observe(obs, step, agent_step)
        obs = step.obs
        history.append((agent_step, agent.updates, same()))
    assert agent.target_syncs == 2
    assert dict((s, u) for s, u, _ in history)[40] == (40 - 16) // 4 + 1
    for agent_step, _, equal in history:
        if agent_step in (40, 80):
            assert equal  # synced right after the step that reached the boundary
        elif agent_step > 16 and agent_step % 40 != 0:
            assert not equal  # updates since the last sync moved the online network
    assert math.isfinite(agent.observe(obs, env.step(agent.act(obs, 80)), 84)["td_loss"])


def play(agent: DQNAgent, env: ChoiceEnv, obs: np.ndarray, agent_step: int, steps: int
         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """What the training loop does, for `steps` env steps; returns the last stacks."""
    actions = []
    for _ in range(steps):
        actions.append(agent.act(obs, agent_step))
        step = env.step(actions[-1])
        agent_step += env.num_envs
        agent.observe(obs, step, agent_step)
        obs = step.obs
    return obs, actions


@pytest.mark.parametrize(("prefetch", "prioritized"),
                         [(False, False), (True, False), (False, True), (True, True)])
def test_a_checkpointed_agent_resumes_exactly(tmp_path: Path, prefetch: bool,
                                              prioritized: bool) -> None:
    """state() through a real checkpoint, load_state() into a new agent: both go on alike
    (with prefetch, from the batch that was being gathered when the checkpoint was taken;
    prioritized, with the priorities the updates reported; the last layers reset on the
    way, before and after the checkpoint)."""
    config = tiny_config(learning_starts=16, batch_size=4, train_freq=4, target_update=24,
                         prefetch=prefetch, prioritized=prioritized, reset_every=28)
    agent, env, obs = started_agent(config)
    agent_step = 0

    obs, _ = play(agent, env, obs, agent_step, 15)
    agent_step = 60
    tensors, meta = agent.state()
    path = save_checkpoint(tmp_path, agent_step, tensors, {"agent": meta}, keep=1,
                           score=math.nan)
    saved_tensors, saved_state = load_checkpoint(path)
    resumed = DQNAgent(config, NUM_ACTIONS, torch.device("cpu"))
    resumed.load_state(saved_tensors, saved_state["agent"])
    assert len(resumed.memory) == len(agent.memory) > 0
    env_copy = copy.deepcopy(env)
    # The training loop restarts every game at a checkpoint, in a resumed run as in the
    # run that goes on.
    obs = env.reset(seed=1)
    agent.start(obs)
    resumed.start(env_copy.reset(seed=1))
    _, actions = play(agent, env, obs, agent_step, 15)
    _, resumed_actions = play(resumed, env_copy, obs, agent_step, 15)
    np.testing.assert_array_equal(np.stack(actions), np.stack(resumed_actions))
    assert resumed.updates == agent.updates > 20 and resumed.target_syncs == agent.target_syncs
    for mine, theirs in zip(agent.network.parameters(), resumed.network.parameters(),
                            strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    batch, resumed_batch = agent.memory.sample(8), resumed.memory.sample(8)
    np.testing.assert_array_equal(batch.obs, resumed_batch.obs)
    np.testing.assert_array_equal(batch.weights, resumed_batch.weights)
    if prioritized:  # the updates did report priorities: they are no longer all equal
        assert np.unique(agent.memory.state_dict()["priorities"]).size > 2


def test_a_rollback_mid_game_neither_bursts_updates_nor_joins_episodes() -> None:
    config = tiny_config(learning_starts=16, batch_size=4, train_freq=4, target_update=24)
    agent, env, obs = started_agent(config)
    obs, _ = play(agent, env, obs, 0, 15)
    tensors, meta = agent.state()
    updates_then = agent.updates
    obs, _ = play(agent, env, obs, 60, 15)
    agent.load_state(tensors, meta)  # the loop rolls back; the games go on
    assert agent.updates == updates_then
    stored = []
    observe = agent.memory.observe
    agent.memory.observe = lambda step: (stored.append(step.first.copy()), observe(step))
    play(agent, env, obs, 120, 2)
    assert agent.updates == updates_then + 2  # one per train_freq agent steps, as before
    assert stored[0].all() and not stored[1].all()  # new episodes start in the memory


def test_stats_before_learning_starts_keep_the_columns_of_later_rows() -> None:
    config = tiny_config()
    agent, env, obs = started_agent(config)
    step = env.step(agent.act(obs, 0))
    early = agent.observe(obs, step, 4)
    assert early is not None and math.isnan(early["td_loss"])
    late_config = dataclasses.replace(config, learning_starts=0)
    agent = DQNAgent(late_config, NUM_ACTIONS, torch.device("cpu"))
    obs = env.reset()
    agent.start(obs)
    stats = None
    for agent_step in range(4, 40, 4):
        step = env.step(agent.act(obs, agent_step))
        stats = agent.observe(obs, step, agent_step) or stats
        obs = step.obs
    assert stats is not None and set(stats) == set(early)


def test_an_env_steps_updates_report_the_mean_of_each_updates_statistics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """_learn keeps the statistics on the device and copies them once: the figures must be
    those of update() called batch by batch on an identical agent."""
    batches = [random_batch(16, seed) for seed in range(3)]
    agents = []
    for _ in range(2):
        torch.manual_seed(0)
        agents.append(DQNAgent(tiny_config(), NUM_ACTIONS, torch.device("cpu")))
    together, one_by_one = agents
    queue = iter(batches)
    monkeypatch.setattr(together, "next_batch", lambda beta=1.0: next(queue))
    stats = together._learn(together.first_update_step, len(batches))
    separate = [one_by_one.update(batch) for batch in batches]
    assert stats is not None
    for name in ("td_loss", "q_mean", "target_mean", "grad_norm"):
        assert stats[name] == pytest.approx(np.mean([row[name] for row in separate]),
                                            rel=1e-5), name
    assert len({row["td_loss"] for row in separate}) == len(batches)  # three different steps


def test_compiled_step_matches_the_eager_one_and_takes_a_new_lr_without_recompiling() -> None:
    # bf16 off (tiny_config): Adam's normalised steps would grow its rounding into
    # differences of ~lr.
    agents = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        agents.append(DQNAgent(tiny_config(compile_step=compile_step), NUM_ACTIONS,
                               torch.device("cpu")))
    batches = [random_batch(16, seed) for seed in range(6)]
    for agent in agents:
        for index, batch in enumerate(batches):
            if index == 3:
                agent.lr_scale = 0.1  # as a rollback does: the compiled step must follow
            with torch._dynamo.config.patch(error_on_recompile=index > 0):
                stats = agent.update(batch)
            assert math.isfinite(stats["grad_norm"])
    eager, compiled = agents
    for mine, theirs in zip(compiled.network.parameters(), eager.network.parameters(),
                            strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=2e-5)
    # Its lr is a tensor, which a checkpoint's JSON holds as a number.
    tensors, meta = compiled.state()
    assert meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        0.1 * compiled.config.learning_rate)
    compiled.load_state(tensors, json.loads(json.dumps(meta)))
    assert math.isfinite(compiled.update(batches[0])["td_loss"])


def test_prefetched_batches_are_those_sampled_one_update_earlier() -> None:
    """With prefetch, update k learns from the batch drawn at update k - 1, from the memory
    as it was then: a plain memory fed the same steps, sampled at those times, draws the
    same batches. Exploration is total, so the steps do not depend on what is learned."""
    config = tiny_config(prefetch=True, learning_starts=16, batch_size=4, train_freq=4,
                         epsilon_start=1.0, epsilon_end=1.0)
    agent, env, obs = started_agent(config)
    reference = replay_memory(config)  # a second memory, sampled the plain way
    reference.observe_reset(obs)
    learned: list[Batch] = []
    update = agent._update  # what each of an env step's updates runs
    agent._update = lambda batch: (learned.append(batch), update(batch))[1]
    expected: list[Batch] = []
    for agent_step in range(4, 120, 4):
        step = env.step(agent.act(obs, agent_step - 4))
        updates = agent.updates
        agent.observe(obs, step, agent_step)
        reference.observe(step)
        due = agent.updates - updates
        if due and not expected:  # the first update samples its own batch
            expected.append(reference.sample(config.batch_size))
        expected.extend(reference.sample(config.batch_size) for _ in range(due))
        obs = step.obs
    assert len(learned) == agent.updates > 20 and len(expected) == len(learned) + 1
    for mine, theirs in zip(learned, expected, strict=False):
        for name in ("obs", "actions", "returns", "next_obs", "discounts"):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), name)


def test_a_reset_gives_the_last_layers_fresh_weights_and_keeps_the_convolutions() -> None:
    config = tiny_config(learning_starts=16, batch_size=4, train_freq=4, dueling=True)
    agent, env, obs = started_agent(config)
    play(agent, env, obs, 0, 12)  # some updates: Adam has moments for every parameter
    assert agent.updates > 0
    assert isinstance(dict(agent.network.named_modules())["torso.7"], nn.Linear)
    before = {n: p.detach().clone() for n, p in agent.network.named_parameters()}
    agent.reset_last_layers(3)
    after = dict(agent.network.named_parameters())
    target = dict(agent.target.named_parameters())
    reset = [n for n in before if n.startswith(LAST_LAYERS)]
    assert sorted(reset) == ["advantage.bias", "advantage.weight", "torso.7.bias",
                             "torso.7.weight", "value.bias", "value.weight"]
    for name, value in before.items():
        state = agent.optimizer.state[after[name]]
        if name in reset:
            assert not torch.equal(after[name], value)
            assert torch.equal(target[name], after[name])  # the target gets them too
            assert all(int(moment.count_nonzero()) == 0 for moment in state.values())
        else:
            assert torch.equal(after[name], value)
            assert int(state["exp_avg_sq"].count_nonzero()) > 0
    # The fresh weights depend on the seed and the reset's number only.
    other, _, _ = started_agent(config)
    other.reset_last_layers(3)
    assert torch.equal(other.network.torso[7].weight, agent.network.torso[7].weight)
    other.reset_last_layers(4)
    assert not torch.equal(other.network.torso[7].weight, agent.network.torso[7].weight)


def test_resets_come_every_reset_every_agent_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(learning_starts=16, batch_size=4, train_freq=4, reset_every=40)
    done: list[tuple[int, int]] = []
    original = DQNAgent.reset_last_layers

    def record(agent: DQNAgent, index: int) -> None:
        done.append((agent.updates, index))
        original(agent, index)

    monkeypatch.setattr(DQNAgent, "reset_last_layers", record)
    agent, env, obs = started_agent(config)
    play(agent, env, obs, 0, 25)  # 25 steps of 4 envs: agent steps 4 ... 100
    assert [index for _, index in done] == [1, 2]  # at agent steps 40 and 80
    assert done[0][0] == (40 - 16) // 4 + 1  # after the updates of the step that got there
