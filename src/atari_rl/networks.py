"""The Nature DQN network (Mnih et al. 2015) with an actor-critic head and a Q-value head.

Observations stay uint8 until they are inside the network: a stack of four 84x84 frames
is 28 KB as bytes and 113 KB as float32, and the copies add up at thousands of steps/s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import torch
from torch import nn

PIXEL_SCALE = 1.0 / 255.0


def nature_torso(in_frames: int = 4) -> nn.Sequential:
    """conv 32x8x8/4, 64x4x4/2, 64x3x3/1, dense 512: 84x84 in, 512 features out."""
    return nn.Sequential(
        nn.Conv2d(in_frames, 32, kernel_size=8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, kernel_size=3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
        nn.ReLU(),
    )


def _init_orthogonal(module: nn.Module, gain: float) -> None:
    """Orthogonal init, as in the OpenAI baselines that A2C results are compared with."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


def channels_last(obs: torch.Tensor) -> torch.Tensor:
    """uint8 stacks [B, frames, 84, 84] laid out channels_last (the frames innermost), the
    layout the CPU's convolutions read. Copying the bytes costs less than the network's
    own conversion from the default layout: a Q-network forward at batch 256, 2 threads,
    bf16 takes 4.7 ms from channels_last against 8.2 ms, and the copy 1.5 ms."""
    return obs.contiguous(memory_format=torch.channels_last)


def select_stacks(obs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """obs[index] of channels_last stacks, still channels_last, gathered as whole rows of
    bytes: 0.3 ms for 256 of a PPO rollout's 1,024 stacks against 2.0 ms for obs[index],
    which gathers element by element in this layout (2 threads)."""
    count, frames, height, width = obs.shape
    rows = obs.permute(0, 2, 3, 1).reshape(count, height * width * frames)
    picked = rows.index_select(0, index)
    return picked.view(len(index), height, width, frames).permute(0, 3, 1, 2)


def scale_pixels(obs: torch.Tensor) -> torch.Tensor:
    return obs.float() * PIXEL_SCALE


class ActorCritic(nn.Module):
    """Shared torso; returns policy logits [B, A] and state values [B]."""

    def __init__(self, num_actions: int, in_frames: int = 4):
        super().__init__()
        self.torso = nature_torso(in_frames)
        self.policy = nn.Linear(512, num_actions)
        self.value = nn.Linear(512, 1)
        _init_orthogonal(self.torso, gain=2**0.5)
        _init_orthogonal(self.policy, gain=0.01)  # near-uniform policy at the start
        _init_orthogonal(self.value, gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.torso(scale_pixels(obs))
        # The heads stay in fp32 under bf16 autocast: value targets need the precision.
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            return self.policy(features), self.value(features).squeeze(-1)


class QNetwork(nn.Module):
    """Q-values [B, A]; the dueling form splits them into value and mean-free advantage."""

    def __init__(self, num_actions: int, in_frames: int = 4, dueling: bool = False):
        super().__init__()
        self.torso = nature_torso(in_frames)
        self.dueling = dueling
        self.advantage = nn.Linear(512, num_actions)
        self.value = nn.Linear(512, 1) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.torso(scale_pixels(obs))
        # The heads stay in fp32 under bf16 autocast: bf16 keeps 3 digits, and the gaps
        # between the values of actions are often smaller than that.
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            advantage = self.advantage(features)
            if self.value is None:
                return advantage
            return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)


FIRST_CONV = "torso.0.weight"  # every network here starts with it: the input's frame count


def actor_critic_from(tensors: dict[str, torch.Tensor]) -> tuple[nn.Module, int] | None:
    """The `ActorCritic` that a policy file's tensors fit (the caller loads them), with its
    number of actions; None when they hold no policy head."""
    if "policy.weight" not in tensors:
        return None
    num_actions = tensors["policy.weight"].shape[0]
    return ActorCritic(num_actions, tensors[FIRST_CONV].shape[1]), num_actions


def q_network_from(tensors: dict[str, torch.Tensor]) -> tuple[nn.Module, int] | None:
    """The `QNetwork` (dueling when a value head is there) that the tensors fit, or None."""
    if "advantage.weight" not in tensors:
        return None
    num_actions = tensors["advantage.weight"].shape[0]
    return QNetwork(num_actions, tensors[FIRST_CONV].shape[1],
                    dueling="value.weight" in tensors), num_actions


def acting_copy(network: nn.Module, bf16: bool) -> nn.Module:
    """A copy of `network` to act with while its weights stay fixed (a PPO rollout), its
    torso in bf16 when `bf16`: run under `bf16_autocast` it computes what the network
    does, since autocast casts the input and each weight to bf16 anyway, but without
    casting 1.7 M weights at every step. Refresh it with `load_state_dict` (which
    converts) after the network changes."""
    copy = deepcopy(network).requires_grad_(False)
    if bf16:
        copy.torso.to(torch.bfloat16)
    return copy


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast of a network's torso (its heads turn it off for themselves), the one
    context every agent runs its forward passes in."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread inside, then back to the count it had (the automatic one
    included), for forward passes on a few stacks while the emulator threads need the cores.

    - Evaluation and recording play batches of 1 to 16 stacks: on a loaded 2-core machine
      two torch threads took 77 ms per batch of 2 stacks and one thread 0.6 ms, since the
      threads only fought each other.
    - PPO acts in it where bf16 is on: its compiled act on 8 observations is then a chain
      of small kernels, each an OpenMP region that the second thread must join, woken from
      sleep after every step of the emulators. In the training loop (2 cores) an act took
      2.1-2.2 ms with both threads and 1.7 ms on one. In fp32 on an AVX2 CPU the act is
      long enough for two threads to pay (5.4 against 7.0 ms). A2C's act (16 envs) did not
      change, and Double DQN's greedy act got slower (2.2 against 1.7 ms), so in training
      they keep all threads.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def bf16_pays_off(device: torch.device) -> bool:
    """bf16 autocast is worth it on a GPU, and on CPUs that compute bf16 natively
    (AVX-512 BF16 or AMX); elsewhere it is emulated and slower than fp32."""
    if device.type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present and not refused, else the CPU; ValueError when CUDA is asked for
    on a machine without it (a study's trial may land on a node without a GPU)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this machine has no CUDA device that torch can use; "
                         "use --device auto or cpu")
    return torch.device(requested)


def configure_cpu_threads(threads: int) -> None:
    """Torch intra-op threads (the emulators run between updates, so they share cores)."""
    torch.set_num_threads(max(threads, 1))
