"""Double DQN over the vector env, learning from a compressed replay memory.

Every env step goes into the replay memory (`replay.ReplayMemory`, each frame stored once
and compressed, so 1 M transitions fit in about half a GB). Once `learning_starts` agent
steps have been played at random, one update per `train_freq` agent steps: a uniform
batch of (n-step) transitions, the Double DQN target (the online network chooses the next
action, the target network values it, `maths.double_dqn_targets`), Huber loss and Adam.
The target network is a copy of the online one, refreshed every `target_update` agent
steps; actions are epsilon-greedy with epsilon decaying linearly. With `prioritized`, the
batch is drawn by priority instead (Schaul et al. 2016; `priorities.py`), each sample's
loss is scaled by its importance weight, and its new |TD error| becomes its priority.

Speed on a small CPU (benchmarks/dqn_breakout.py, benchmarks/dqn_loop.py): observations
stay uint8 until inside the network, and reach it channels_last (`networks.channels_last`);
acting runs under `torch.inference_mode` and skips the network when every env explores;
the whole loss (the online and target forwards of the next states and the
online forward of the states) is one `torch.compile`d graph; the torso runs under bf16
autocast where the CPU computes bf16 natively, the Q heads in fp32; Adam is the fused one.
With several envs, `train_freq` still counts agent steps, so 8 envs and `train_freq` 8
make one update per step of the vector env. Two more options, measured by
benchmarks/dqn_update.py: `prefetch` (gather the next batch in a thread during this
update) and `compile_step` (compile the clipping and Adam's step too). One forward of the
online network over s and s' stacked was measured too and dropped: 12% slower an update
at batch 64 on this CPU, since its backward runs over both halves.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atari_rl.algorithms import Q_VALUES, Algorithm, CliffSignals, register
from atari_rl.checkpoints import (
    learner_state,
    load_learner_state,
    with_prefix,
    without_prefix,
)
from atari_rl.config import Preset, RunConfig, require
from atari_rl.envs import Step
from atari_rl.maths import double_dqn_targets, linear_schedule
from atari_rl.networks import (
    QNetwork,
    bf16_autocast,
    bf16_pays_off,
    channels_last,
    q_network_from,
)
from atari_rl.plots import FigureSpec, Panel
from atari_rl.replay import Batch, Draw, ReplayMemory, check_capacity, check_fits

# What `--reset-every` gives fresh weights: the dense layer of the torso and the heads.
LAST_LAYERS = ("torso.7.", "advantage.", "value.")

# What an update reports, in the order of DQNAgent._update's tensor.
UPDATE_STATS = ("td_loss", "q_mean", "target_mean", "grad_norm")


@dataclass
class DQNConfig(RunConfig):
    """Double DQN (van Hasselt et al. 2016) with a compressed replay memory.

    `train_freq`, `target_update`, `learning_starts` and `epsilon_steps` count agent steps
    summed over the envs, so one update per `train_freq` agent steps keeps the replay ratio
    (samples learned per step played, batch_size / train_freq) whatever `num_envs` is.
    The defaults are `dqn-fast`; `dqn-nature` changes them back to the classic settings.
    """

    algo: str = "dqn"
    num_envs: int = 8
    buffer_size: int = 1_000_000  # transitions over all envs; checked against free memory
    replay_codec: str = "zstd"  # frame compression in the replay memory: zstd, lz4 or zlib
    learning_starts: int = 20_000  # agent steps of random play before the first update
    batch_size: int = 64  # transitions in each update's replay batch
    train_freq: int = 8  # agent steps per update
    target_update: int = 8_000  # agent steps between copies of the online network
    n_steps: int = 3  # n-step returns
    gamma: float = 0.99  # discount factor
    learning_rate: float = 1e-4  # Adam's step size
    optimizer_eps: float = 1.5e-4  # Adam's epsilon (Rainbow's 1.5e-4; PyTorch's default is 1e-8)
    max_grad_norm: float = 10.0  # gradients are clipped to this L2 norm
    epsilon_start: float = 1.0  # exploration: the chance of a random action at the start
    epsilon_end: float = 0.01  # the chance of a random action from epsilon_steps on
    epsilon_steps: int = 250_000  # agent steps of the linear decay
    dueling: bool = False  # dueling heads: Q = V + A - mean(A) (Wang et al. 2016)
    compile: bool = True  # torch.compile the network (warm-up about 40 s on this CPU)
    compile_step: bool = False  # torch.compile the gradient clipping and Adam's step too
    prefetch: bool = False  # sample the next batch in a background thread while this update runs
    bf16: bool = True  # bf16 autocast for the torso on CPUs that have it; Q heads stay fp32
    prioritized: bool = False  # draw transitions in proportion to |TD error| ** exponent
    priority_exponent: float = 0.5  # alpha, Rainbow's; the nearer 0, the nearer uniform
    priority_weight: float = 0.4  # beta, linear from this to 1: how much bias the weights undo
    reset_every: int = 0  # agent steps between fresh weights for the last layers (0: never)
    log_every: int = 10_000

    def validate(self) -> None:
        super().validate()
        require(isinstance(self.n_steps, int) and self.n_steps > 0,
                 "--n-steps must be a positive integer for dqn")
        require(self.batch_size > 0, "--batch-size must be positive")
        require(self.train_freq > 0, "--train-freq must be a positive number of agent steps")
        require(self.target_update > 0,
                 "--target-update must be a positive number of agent steps")
        require(self.learning_starts >= 0, "--learning-starts must be 0 or more")
        require(self.epsilon_steps >= 0, "--epsilon-steps must be 0 or more")
        require(0.0 <= self.epsilon_end <= 1.0 and 0.0 <= self.epsilon_start <= 1.0,
                 "--epsilon-start and --epsilon-end must be in [0, 1]")
        require(0.0 < self.gamma <= 1.0, "--gamma must be in (0, 1]")
        require(self.learning_rate > 0, "--learning-rate must be positive")
        require(self.max_grad_norm > 0, "--max-grad-norm must be positive")
        require(self.reset_every >= 0,
                "--reset-every must be 0 (never) or a positive number of agent steps")
        require(self.replay_codec in ("zstd", "lz4", "zlib"),
                 "--replay-codec must be zstd, lz4 or zlib")
        require(0.0 < self.priority_exponent <= 1.0, "--priority-exponent must be in (0, 1]")
        require(0.0 <= self.priority_weight <= 1.0, "--priority-weight must be in [0, 1]")
        check_capacity(self.buffer_size, self.num_envs, self.env_config().frame_stack,
                       self.n_steps)


# dqn-3h's changes to dqn-fast; dqn-sample-efficient is the same at twice the replay ratio.
DQN_3H = {
    "steps": 6_000_000,
    "dueling": True,
    "batch_size": 128,
    "train_freq": 32,
    "learning_rate": 2e-4,
    "target_update": 16_000,
}

PRESETS = (
    Preset("dqn-fast", "dqn", "Double DQN for a CPU (the default): 8 envs, 3-step returns, "
           "batch 64 every 8 steps (replay ratio 8)", {}),
    Preset("dqn-nature", "dqn", "Double DQN with the classic Nature settings (1 env, 1 M "
           "buffer, batch 32 every 4 steps, epsilon 1 to 0.1 over 1 M steps), Adam", {
               "num_envs": 1,
               "learning_starts": 50_000,
               "batch_size": 32,
               "train_freq": 4,
               "target_update": 10_000,
               "n_steps": 1,
               "epsilon_end": 0.1,
               "epsilon_steps": 1_000_000,
           }),
    Preset("dqn-3h", "dqn", "Double DQN that took Breakout past a 200 mean within 3 hours of "
           "a 2-core CPU (the shipped breakout-dqn): dqn-fast with dueling heads, batch 128 "
           "every 32 steps (half the replay ratio: half the learning per step played), Adam 2e-4, "
           "target every 16,000 steps, 6 M steps", DQN_3H),
    Preset("dqn-sample-efficient", "dqn", "Double DQN with the highest training mean at "
           "every mark from 1.8 M to 3 M agent steps of the settings measured (README, "
           "'Double DQN per agent step'): dqn-3h at twice its replay ratio, batch 128 every "
           "16 steps (dueling, Adam 2e-4, target every 16,000 steps), 3 M steps. It levels "
           "off near 150-180 after that; dqn-3h is the fewest steps to 200 measured (4.08 M)",
           {**DQN_3H, "steps": 3_000_000, "train_freq": 16}),
)


def replay_memory(config: DQNConfig) -> ReplayMemory:
    """The empty replay memory of a run with this config."""
    return ReplayMemory(config.buffer_size, config.num_envs,
                        frame_stack=config.env_config().frame_stack, n_step=config.n_steps,
                        gamma=config.gamma, codec=config.replay_codec, seed=config.seed,
                        priority_exponent=config.priority_exponent if config.prioritized
                        else None)


def check_machine(config: DQNConfig) -> None:
    """Before a run starts: refuse a replay memory this machine cannot hold. Not part of
    validate(), so that a saved config reads back on a smaller machine."""
    check_fits(config.buffer_size, config.num_envs, prioritized=config.prioritized)


def priority_weight(config: DQNConfig, agent_step: int) -> float:
    """Prioritized replay's beta: linear from priority_weight to 1 over the run."""
    return linear_schedule(config.priority_weight, 1.0, agent_step / config.steps)


def epsilon(config: DQNConfig, agent_step: int) -> float:
    """Exploration rate: linear from epsilon_start to epsilon_end over epsilon_steps."""
    if config.epsilon_steps == 0:
        return config.epsilon_end
    return linear_schedule(config.epsilon_start, config.epsilon_end,
                           agent_step / config.epsilon_steps)


def q_values(network: torch.nn.Module, obs: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Q-values [B, A] in fp32 of a `QNetwork`; with bf16 its torso runs under bf16 autocast
    (twice as fast on this CPU) while `QNetwork` keeps its heads in fp32."""
    with bf16_autocast(obs.device, bf16):
        return network(obs).float()


def td_loss(
    online: torch.nn.Module,
    target: torch.nn.Module,
    obs: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    next_obs: torch.Tensor,
    discounts: torch.Tensor,
    bf16: bool = False,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Huber loss between Q(s, a) and the Double DQN target; also Q(s, a) and the targets.
    With importance `weights` (prioritized replay), the mean of the weighted losses."""
    with torch.no_grad():
        targets = double_dqn_targets(returns, discounts, q_values(online, next_obs, bf16),
                                     q_values(target, next_obs, bf16))
    q_taken = q_values(online, obs, bf16).gather(1, actions[:, None]).squeeze(1)
    if weights is None:
        loss = F.smooth_l1_loss(q_taken, targets)
    else:
        loss = (weights * F.smooth_l1_loss(q_taken, targets, reduction="none")).mean()
    return loss, q_taken.detach(), targets


class DQNAgent:
    """The `training.Agent` of Double DQN; `start` must see the stacks of `env.reset()`."""

    def __init__(self, config: DQNConfig, num_actions: int, device: torch.device):
        self.config = config
        self.device = device
        self.num_actions = num_actions
        self.network = QNetwork(num_actions, dueling=config.dueling).to(device)
        self.target = copy.deepcopy(self.network).requires_grad_(False)
        # A compiled step reads the lr from a tensor: a float would recompile it whenever
        # lr_scale changes.
        self._lr = (torch.tensor(config.learning_rate, device=device)
                    if config.compile_step else None)
        # fused: one kernel for all parameters, 1.5 ms a step here instead of 12 ms
        self.optimizer = torch.optim.Adam(self.network.parameters(),
                                          lr=config.learning_rate if self._lr is None
                                          else self._lr,
                                          eps=config.optimizer_eps, fused=True)
        self.memory = replay_memory(config)
        self.lr_scale = 1.0  # lowered by the training loop when it rolls back a collapse
        self.updates = 0
        self.target_syncs = 0
        self._episodes_cut = False
        # The first update waits for learning_starts and for complete n-step windows.
        self.first_update_step = max(config.learning_starts,
                                     config.num_envs * (config.n_steps + 1))
        self._rng = np.random.default_rng(config.seed)
        self.bf16 = config.bf16 and bf16_pays_off(device)
        self._act_forward = self._greedy_q
        self._loss = td_loss
        self._optimizer_step = self._clip_and_step
        if config.compile:  # one graph per shape: acting [num_envs], the loss [batch_size]
            self._act_forward = torch.compile(self._act_forward, dynamic=False)
            self._loss = torch.compile(td_loss, dynamic=False)
        if config.compile_step:
            self._optimizer_step = torch.compile(self._clip_and_step)
        # With prefetch: the next batch, drawn at this update and gathered in a thread. The
        # memory must not change under it: every write waits for it first (`_settle`).
        self._prefetcher: ThreadPoolExecutor | None = None
        self._pending: tuple[Draw, Future[Batch]] | None = None

    def start(self, obs: np.ndarray) -> None:
        """The first stacks of every env, as returned by `env.reset()`."""
        self._settle()
        self.memory.observe_reset(obs)
        self._episodes_cut = False

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything an exact resume needs, the replay memory included (about 0.5 GB a 1 M).

        The memory's arrays go in as tensors without copies; its structured per-frame
        records as their bytes. A batch being prefetched goes in as its draw, whose frames
        are gathered again on load: the memory's random generator is already past it.
        """
        self._settle()
        learner_tensors, learner_meta = learner_state(self.network, self.optimizer)
        replay = self.memory.state_dict()
        tensors = {
            **learner_tensors,
            **with_prefix("target", self.target.state_dict()),
            **{f"replay.{name}": torch.from_numpy(_plain(array))
               for name, array in replay.items() if name != "header"},
        }
        meta = {**learner_meta, "updates": self.updates,
                "target_syncs": self.target_syncs, "rng": self._rng.bit_generator.state,
                "replay": json.loads(str(replay["header"])),
                "prefetched": None if self._pending is None else self._pending[0].to_lists()}
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore a checkpoint: on resume before `start`, or in a rollback mid-game.

        In a rollback the envs play on while the memory goes back to the checkpoint, so
        the next step starts new episodes in it rather than continue the old ones.
        """
        self._settle()
        self._pending = None
        load_learner_state(self.network, self.optimizer, tensors, meta)
        self.target.load_state_dict(without_prefix("target", tensors))
        self.updates, self.target_syncs = meta["updates"], meta["target_syncs"]
        self._rng.bit_generator.state = meta["rng"]
        replay: dict[str, np.ndarray] = {"header": np.array(json.dumps(meta["replay"]))}
        for name, mine in self.memory.state_dict().items():
            if name != "header":
                saved = tensors[f"replay.{name}"].numpy()
                replay[name] = saved.view(mine.dtype) if mine.dtype.fields else saved
        self.memory = ReplayMemory.from_state_dict(replay)
        if meta.get("prefetched") is not None:
            self._prefetch(Draw.from_lists(meta["prefetched"]))
        self._episodes_cut = True

    def act(self, obs: np.ndarray, agent_step: int) -> np.ndarray:
        """Epsilon-greedy actions; the network runs only when some env exploits."""
        num_envs = len(obs)
        explore = self._rng.random(num_envs) < epsilon(self.config, agent_step)
        actions = self._rng.integers(0, self.num_actions, num_envs)
        if not explore.all():
            greedy = self.greedy(obs)
            actions = np.where(explore, actions, greedy)
        return actions

    @torch.inference_mode()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return self._act_forward(channels_last(torch.from_numpy(obs).to(self.device))).cpu().numpy()

    def _greedy_q(self, obs: torch.Tensor) -> torch.Tensor:
        return q_values(self.network, obs, self.bf16).argmax(dim=1)

    def observe(self, obs: np.ndarray, step: Step, agent_step: int) -> dict[str, float] | None:
        """Store the step, run the updates now due, then refresh the target if it is time.

        Returns the updates' mean statistics, None when no update was due, and while the
        memory fills before learning starts the same keys (NaN for the learner's) so that
        the progress bar moves and metrics.csv keeps its columns.

        What is due depends only on the agent steps this env step covers, (agent_step -
        num_envs, agent_step]: a run resumed or rolled back to a checkpoint goes on at the
        same pace, without a burst of updates to catch up.
        """
        if self._episodes_cut:  # restored mid-game: the memory's episodes end here
            step = dataclasses.replace(step, first=np.ones_like(step.first))
            self._episodes_cut = False
        self._settle()
        self.memory.observe(step)
        previous = agent_step - self.config.num_envs
        stats = self._learn(agent_step, self._updates_until(agent_step)
                            - self._updates_until(previous))
        syncs = agent_step // self.config.target_update - previous // self.config.target_update
        for _ in range(syncs):
            self.sync_target()
        if self.config.reset_every:
            every = self.config.reset_every
            for index in range(previous // every + 1, agent_step // every + 1):
                self.reset_last_layers(index)
        return stats

    def _updates_until(self, agent_step: int) -> int:
        """Updates due in a run by this agent step: one per train_freq from the first."""
        if agent_step < self.first_update_step:
            return 0
        return (agent_step - self.first_update_step) // self.config.train_freq + 1

    def _learn(self, agent_step: int, updates: int) -> dict[str, float] | None:
        config = self.config
        if agent_step < self.first_update_step:
            return {**dict.fromkeys(UPDATE_STATS, math.nan),
                    "epsilon": epsilon(config, agent_step),
                    "replay_size": float(len(self.memory))}
        if updates == 0:
            return None
        beta = priority_weight(config, agent_step)
        total = sum(self._update(self.next_batch(beta)) for _ in range(updates))
        stats = _stats(total / updates)
        stats.update(epsilon=epsilon(config, agent_step), replay_size=float(len(self.memory)))
        return stats

    def next_batch(self, beta: float = 1.0) -> Batch:
        """The batch of the next update. With prefetch it was drawn at the update before,
        from the memory as it was then (one env step older), and the one after it starts
        gathering now: the draws come in the same order as without prefetch. `beta` is
        prioritized replay's `priority_weight` now (ignored by a uniform memory)."""
        size = self.config.batch_size
        if self._pending is not None:
            batch = self._pending[1].result()
            self._pending = None
        else:
            batch = self.memory.sample(size, beta)
        if self.config.prefetch:
            self._prefetch(self.memory.draw(size, beta))
        return batch

    def _prefetch(self, draw: Draw) -> None:
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="replay-prefetch")
        self._pending = (draw, self._prefetcher.submit(self.memory.gather, draw))

    def _settle(self) -> None:
        """Wait for a batch being gathered (and keep it): the memory is about to change."""
        if self._pending is not None:
            self._pending[1].result()

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of Adam on a replay batch, and its statistics."""
        return _stats(self._update(batch))

    def _update(self, batch: Batch) -> torch.Tensor:
        """One gradient step of Adam; its UPDATE_STATS stay on the device, in one tensor,
        so that a GPU waits for the host once per env step's updates, not four times an
        update."""
        lr: float | torch.Tensor = self.config.learning_rate * self.lr_scale
        if self._lr is not None:
            lr = self._lr.fill_(lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        tensors = (torch.from_numpy(a).to(self.device) for a in
                   (batch.obs, batch.actions, batch.returns, batch.next_obs, batch.discounts))
        obs, actions, returns, next_obs, discounts = tensors
        obs, next_obs = channels_last(obs), channels_last(next_obs)
        weights = None if batch.weights is None else torch.from_numpy(batch.weights).to(
            self.device)
        loss, q_taken, targets = self._loss(self.network, self.target, obs, actions, returns,
                                            next_obs, discounts, self.bf16, weights)
        if batch.draw is not None:
            self.memory.update_priorities(batch.draw, (q_taken - targets).cpu().numpy())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self._optimizer_step()
        self.updates += 1
        return torch.stack([loss.detach().float(), q_taken.detach().float().mean(),
                            targets.float().mean(), grad_norm.float()])

    def _clip_and_step(self) -> torch.Tensor:
        """Clip the gradients' norm, then Adam's step; returns the norm before clipping."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(),
                                                   self.config.max_grad_norm)
        self.optimizer.step()
        return grad_norm

    def sync_target(self) -> None:
        self.target.load_state_dict(self.network.state_dict())
        self.target_syncs += 1

    def reset_last_layers(self, index: int) -> None:
        """Fresh weights for the dense layer and the heads (`LAST_LAYERS`) of the online
        and the target network, and fresh Adam moments for them; the convolutions and the
        replay memory keep what they hold. At high replay ratios a network stops learning
        from new data after a while (the primacy bias, Nikishin et al. 2022, whose remedy
        this is); both runs here above a replay ratio of 4 levelled off (README).

        The fresh weights depend only on the run's seed and `index` (the reset's number,
        agent_step // reset_every), so a resumed run draws the same ones."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed * 1_000_003 + index)
            fresh = QNetwork(self.num_actions, dueling=self.config.dueling).state_dict()
        with torch.no_grad():
            for network in (self.network, self.target):
                for name, parameter in network.named_parameters():
                    if name.startswith(LAST_LAYERS):
                        parameter.copy_(fresh[name])
                        # exp_avg, exp_avg_sq and the step count (the target has none)
                        for moment in self.optimizer.state.get(parameter, {}).values():
                            moment.zero_()


def _stats(values: torch.Tensor) -> dict[str, float]:
    """UPDATE_STATS by name, from their tensor: one copy to the host."""
    return dict(zip(UPDATE_STATS, values.tolist(), strict=True))


def _plain(array: np.ndarray) -> np.ndarray:
    """An array torch can hold: structured records become their bytes (a view, no copy)."""
    return array.view(np.uint8) if array.dtype.fields else array


ALGORITHM = register(Algorithm(
    name="dqn",
    title="Double DQN",
    config=DQNConfig,
    presets=PRESETS,
    make_agent=lambda config, num_actions, device: DQNAgent(config, num_actions, device),
    load_network=q_network_from,
    outputs=Q_VALUES,
    figures=(
        FigureSpec("losses", "Losses (the TD loss on a log scale)", (
            Panel("td_loss", "TD loss", log=True),
        )),
        FigureSpec("value", "Value estimates", (
            Panel("q_mean", "mean Q(s, a)\n(clipped-reward units)"),
        )),
        FigureSpec("epsilon", "Exploration epsilon", (Panel("epsilon", "epsilon"),)),
    ),
    cliff=CliffSignals(loss="td_loss", entropy=None,
                       watched=("td_loss", "grad_norm", "q_mean")),
    check_machine=check_machine,
))
