"""Importing atari_rl keeps torch's freed buffers in the heap: no page faults per update."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from atari_rl.heap import OVERRIDES, is_glibc, keep_freed_memory
from atari_rl.networks import bf16_pays_off

glibc_only = pytest.mark.skipif(not is_glibc(), reason="glibc's mallopt")

# The learner's precision on this CPU, which the measured step uses, and how many times
# fewer faults the setting must leave in it. bf16 (AVX-512 BF16): about 14,000 a step
# without, 0 with. fp32 on an AVX2 CPU: 5,400-7,000 without, 640-1,400 with (the rest not
# traced to their source).
PRECISION = "bf16" if bf16_pays_off(torch.device("cpu")) else "fp32"
FEWER_FAULTS = {"bf16": 10, "fp32": 3}[PRECISION]

STEP = """
import resource, sys
if sys.argv[1] == "tuned":
    import atari_rl  # sets glibc's thresholds before torch loads, as every entry point does
import torch
from torch import nn
torch.manual_seed(0)
torch.set_num_threads(1)
net = nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                    nn.Flatten(), nn.Linear(64 * 9 * 9, 512)).to(memory_format=torch.channels_last)
x = torch.randint(0, 256, (256, 4, 84, 84), dtype=torch.uint8)
x = x.contiguous(memory_format=torch.channels_last)
def step():
    # a learner's minibatch, as PPO's: bf16 where the CPU computes it, else fp32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=sys.argv[2] == "bf16"):
        out = net(x.float() / 255)
    out.float().sum().backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def faults_per_step(mode: str) -> float:
    env = {name: value for name, value in os.environ.items()
           if name not in (*OVERRIDES, "GLIBC_TUNABLES")}  # glibc's defaults in both
    out = subprocess.run([sys.executable, "-c", STEP, mode, PRECISION], check=True, env=env,
                         stdout=subprocess.PIPE, text=True).stdout
    return float(out.strip().splitlines()[-1])


@glibc_only
def test_importing_atari_rl_stops_the_page_faults_of_each_update():
    plain = faults_per_step("plain")
    if plain < 1000:
        pytest.skip(f"this glibc faulted {plain} times a step without the setting: "
                    "nothing to compare")
    assert faults_per_step("tuned") < plain / FEWER_FAULTS


@glibc_only
@pytest.mark.parametrize("variable, value", [
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
    ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072"),
])
def test_a_user_setting_of_the_thresholds_wins(monkeypatch, variable, value):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert keep_freed_memory() is True
    monkeypatch.setenv(variable, value)
    assert keep_freed_memory() is False
