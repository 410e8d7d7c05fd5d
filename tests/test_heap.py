"""Importing atari_rl keeps torch's freed buffers in the heap: no page faults per update."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a learner's minibatch, as PPO's
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
    out = subprocess.run([sys.executable, "-c", STEP, mode], check=True, capture_output=True,
                         text=True).stdout
    return float(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_importing_atari_rl_stops_the_page_faults_of_each_update():
    plain, tuned = faults_per_step("plain"), faults_per_step("tuned")
    assert plain > 1000, f"glibc did not fault here ({plain} a step): nothing to compare"
    assert tuned < plain / 10, (plain, tuned)


def test_the_environment_overrides_the_thresholds(monkeypatch):
    from atari_rl.heap import keep_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
