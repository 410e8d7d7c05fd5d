"""PPO: its rollout, a tiny task it must learn, and the registry that made it one module."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atari_rl import algorithms as registry
from atari_rl.algorithms import MODULES, PROBABILITIES, Algorithm, CliffSignals, algorithms
from atari_rl.checkpoints import NETWORK_PREFIX, save_tensors, with_prefix, without_prefix
from atari_rl.cli import main
from atari_rl.config import Preset, RunConfig
from atari_rl.networks import ActorCritic, actor_critic_from
from atari_rl.plots import FigureSpec, Panel
from atari_rl.policy import load_policy
from atari_rl.ppo import PPOAgent, PPOConfig
from atari_rl.run_files import CONFIG_FILE, FIGURES_DIR, FINAL_POLICY, METRICS_FILE, VIDEO_FILE
from atari_rl.training import train
from tests.tasks import CueTask, assert_learned_the_cue, cue_screen

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "atari_rl"


def tiny_config(**changes: object) -> PPOConfig:
    settings = dict(num_envs=8, n_steps=8, epochs=4, minibatches=2, steps=8 * 8 * 25,
                    compile=False, bf16=False, learning_rate=1e-3, lr_schedule="constant",
                    log_every=64, seed=0)
    config = PPOConfig(**{**settings, **changes})  # type: ignore[arg-type]
    config.validate()
    return config


def test_ppo_learns_a_tiny_task(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    train(config, tmp_path, CueTask(config.num_envs, seed=1))
    assert_learned_the_cue(tmp_path / FINAL_POLICY)
    header = (tmp_path / METRICS_FILE).read_text().splitlines()[0].split(",")
    for column in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                   "explained_variance", "clip_range", "learning_rate"):
        assert column in header, column


def test_a_ppo_policy_file_plays_through_the_same_policy_api(tmp_path):
    path = tmp_path / FINAL_POLICY
    save_tensors(path, ActorCritic(4).state_dict(),
                 {"algo": "ppo", "game": "breakout", "num_actions": "4"})
    policy = load_policy(path)
    assert policy.algo == "ppo" and policy.values_label == PROBABILITIES
    obs = np.stack([cue_screen(0), cue_screen(1)])
    np.testing.assert_allclose(policy.action_values(obs).sum(axis=1), 1.0, rtol=1e-5)
    assert policy.act(obs, sample=True).shape == (2,)


class FixedPolicy(torch.nn.Module):
    """The same logits for every observation."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits.expand(len(obs), -1), torch.zeros(len(obs))


def test_actions_are_drawn_with_the_policys_probabilities():
    """The Gumbel-max draw: frequencies over 100,000 draws within 0.01 of the softmax, and
    the log-probability kept for each action is the policy's."""
    agent = PPOAgent(tiny_config(), 4, torch.device("cpu"))
    agent.acting_network = FixedPolicy([2.0, 0.0, -1.0, 0.5])  # type: ignore[assignment]
    draws = 100_000
    uniform = torch.rand(draws, 4, generator=agent._sampling)
    actions, log_prob, _ = agent._draw(torch.zeros(draws, 1), uniform)
    expected = torch.softmax(agent.acting_network.logits, 0)
    frequencies = torch.bincount(actions, minlength=4) / draws
    torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(log_prob, expected.log()[actions])


def test_the_rollout_keeps_what_the_policy_said_when_it_acted():
    config = tiny_config(n_steps=3)
    agent = PPOAgent(config, CueTask.num_actions, torch.device("cpu"))
    task = CueTask(config.num_envs, seed=2)
    obs = task.reset()
    agent.start(obs)
    said = []
    for _ in range(2):
        actions = agent.act(obs, 0)
        said.append(agent._acted)
        step = task.step(actions)
        assert agent.observe(obs, step, 0) is None  # no update before n_steps
        obs = step.obs
    batch_rows = agent.rollout._rows
    for row, (log_prob, value) in zip(batch_rows, said, strict=True):
        np.testing.assert_array_equal(row[-2], log_prob)
        np.testing.assert_array_equal(row[-1], value)
    with torch.no_grad():
        logits, values = agent.network(torch.from_numpy(batch_rows[0][0]))
    chosen = torch.log_softmax(logits, 1).gather(1, torch.from_numpy(batch_rows[0][1])[:, None])
    np.testing.assert_allclose(said[0][0], chosen.squeeze(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(said[0][1], values.numpy(), rtol=1e-5, atol=1e-6)
    actions = agent.act(obs, 0)
    stats = agent.observe(obs, task.step(actions), 24)
    assert stats is not None and np.isfinite(stats["approx_kl"]) and stats["clip_range"] == 0.1


@pytest.mark.parametrize("bf16", [False, True])
def test_acting_follows_the_network_after_each_update_and_after_a_load(bf16):
    """The acting copy is refreshed when the network changes: a stale one would collect
    the next rollout with the previous policy and log wrong probabilities. With bf16 (on
    a CPU that computes it) the copy's torso holds the network's weights rounded to bf16."""
    config = tiny_config(n_steps=2, bf16=bf16)
    agent = PPOAgent(config, CueTask.num_actions, torch.device("cpu"))
    torso_dtype = torch.bfloat16 if agent._autocast else torch.float32
    assert agent.acting_network.torso[0].weight.dtype == torso_dtype

    def assert_acts_with(network: torch.nn.Module, acting: torch.nn.Module) -> None:
        acting_state = acting.state_dict()
        for name, tensor in network.state_dict().items():
            want = acting_state[name]
            torch.testing.assert_close(want, tensor.to(want.dtype), rtol=0, atol=0)

    task = CueTask(config.num_envs, seed=3)
    obs = task.reset()
    agent.start(obs)
    before = {name: t.clone() for name, t in agent.acting_network.state_dict().items()}
    stats = None
    while stats is None:
        step = task.step(agent.act(obs, 0))
        stats = agent.observe(obs, step, 0)
        obs = step.obs
    after = agent.acting_network.state_dict()
    for name in ("policy.weight", "torso.0.weight"):  # it learned, and the copy followed
        assert not torch.equal(after[name], before[name]), name
    assert_acts_with(agent.network, agent.acting_network)
    other = PPOAgent(config, CueTask.num_actions, torch.device("cpu"))
    other.load_state(*agent.state())
    assert_acts_with(agent.network, other.acting_network)


def test_a_linear_clip_schedule_shrinks_the_clip_range():
    config = tiny_config(n_steps=2, clip_schedule="linear", steps=1000)
    agent = PPOAgent(config, CueTask.num_actions, torch.device("cpu"))
    task = CueTask(config.num_envs, seed=3)
    obs = task.reset()
    agent.start(obs)
    ranges = []
    for agent_step in (250, 500, 750, 1000):  # an update every second step
        for _ in range(2):
            step = task.step(agent.act(obs, agent_step))
            stats = agent.observe(obs, step, agent_step)
            obs = step.obs
        ranges.append(stats["clip_range"])
    np.testing.assert_allclose(ranges[:3], [0.075, 0.05, 0.025])
    assert 0 < ranges[3] < 1e-6


def _names_of_algorithms() -> set[str]:
    return set(algorithms())


def test_no_module_but_an_algorithms_own_names_an_algorithm():
    """The registry is the only list: no other module names an algorithm or imports one."""
    own = {m.rsplit(".", 1)[1] for m in MODULES} | {"algorithms"}
    names = _names_of_algorithms()
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in own:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.name}:{node.lineno} the string {node.value!r}")
            imported: list[str] = []
            if isinstance(node, ast.Import):  # import atari_rl.ppo
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # from atari_rl(.ppo) import ..., from . import
                module = ".".join(filter(None, ["atari_rl" if node.level else "", node.module]))
                imported = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            offenders += [f"{path.name}:{node.lineno} imports {module}"
                          for module in imported if module in MODULES]
    assert offenders == []


def test_every_registered_algorithm_declares_what_the_rest_needs():
    for name, algorithm in algorithms().items():
        assert algorithm.name == name and algorithm.config().algo == name
        assert {p.algo for p in algorithm.presets} <= {name}
        assert algorithm.outputs in (PROBABILITIES, "Q-values")
        assert algorithm.cliff.loss in algorithm.cliff.watched
        columns = {p.column for f in algorithm.figures for p in f.panels}
        assert algorithm.cliff.loss in columns, name


@dataclasses.dataclass
class CoinConfig(RunConfig):
    """An algorithm defined in this test alone: it plays uniformly random actions and
    learns nothing, with an untrained actor-critic as its network."""

    algo: str = "coin"
    num_envs: int = 2
    coin_bias: float = 0.5  # the chance that a step's statistic `heads` is 1


class CoinAgent:
    def __init__(self, config: CoinConfig, num_actions: int, device: torch.device):
        self.config, self.num_actions = config, num_actions
        self.network = ActorCritic(num_actions).to(device)
        self.lr_scale = 1.0
        self._rng = np.random.default_rng(config.seed)

    def start(self, obs: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, agent_step: int) -> np.ndarray:
        return self._rng.integers(0, self.num_actions, len(obs))

    def observe(self, obs: np.ndarray, step: object, agent_step: int) -> dict[str, float]:
        return {"heads": float(self._rng.random() < self.config.coin_bias)}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        return (with_prefix(NETWORK_PREFIX, self.network.state_dict()),
                {"rng": self._rng.bit_generator.state})

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, object]) -> None:
        self.network.load_state_dict(without_prefix(NETWORK_PREFIX, tensors))
        self._rng.bit_generator.state = meta["rng"]


COIN = Algorithm(
    name="coin", title="Coin", config=CoinConfig,
    presets=(Preset("coin-fair", "coin", "a fair coin", {"coin_bias": 0.5}),),
    make_agent=CoinAgent, load_network=actor_critic_from, outputs=PROBABILITIES,
    figures=(FigureSpec("coin", "Heads", (Panel("heads", "heads"),)),),
    cliff=CliffSignals(loss="heads", entropy=None, watched=("heads",)),
)


def test_an_algorithm_registered_outside_the_package_trains_plots_and_plays(tmp_path,
                                                                             monkeypatch):
    """An algorithm is its module: one registered here, and nowhere else, is trained,
    resumed, plotted, evaluated and recorded by the commands, with its own option
    (--coin-bias), its preset and its figure."""
    monkeypatch.setitem(registry._REGISTRY, "coin", COIN)
    run = tmp_path / "coin-run"
    quiet = ["--torch-threads", "1", "--env-threads", "1", "--log-every", "50"]
    assert main(["train", "--preset", "coin-fair", "--coin-bias", "1", "--steps", "200",
                 "--run-dir", str(run), *quiet]) == 0
    assert main(["train", "--resume", str(run), "--steps", "300"]) == 0
    config = json.loads((run / CONFIG_FILE).read_text())
    assert (config["algo"], config["preset"], config["coin_bias"]) == ("coin", "coin-fair", 1.0)
    metrics = (run / METRICS_FILE).read_text().splitlines()
    assert metrics[0].split(",")[1] == "heads" and int(metrics[-1].split(",")[0]) >= 300
    assert all(row.split(",")[1] == "1.0" for row in metrics[1:])  # bias 1: always heads
    assert main(["plot", str(run)]) == 0
    assert (run / FIGURES_DIR / "coin.png").is_file()
    assert load_policy(run).algo == "coin"
    assert main(["evaluate", str(run), "--games", "1", "--num-envs", "1",
                 "--max-frames", "400"]) == 0
    assert main(["record", str(run), "--max-frames", "100"]) == 0
    assert (run / VIDEO_FILE).stat().st_size > 0
