"""The Nature CNN heads: shapes, the dueling identity, and pixel scaling inside the net.

Observations reach the networks as uint8 straight from the env pipeline, so these tests
feed uint8 and check that scaling happens exactly once, inside forward().
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atari_rl.networks import (
    ActorCritic,
    QNetwork,
    acting_copy,
    bf16_autocast,
    channels_last,
    nature_torso,
    one_thread,
    scale_pixels,
    select_stacks,
)

NUM_ACTIONS = 4


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def frames(batch: int, in_frames: int = 4) -> torch.Tensor:
    """Random uint8 stacks shaped like the pipeline's observations."""
    return torch.randint(0, 256, (batch, in_frames, 84, 84), dtype=torch.uint8)


def test_nature_torso_gives_512_features() -> None:
    torso = nature_torso()
    assert torso(scale_pixels(frames(3))).shape == (3, 512)
    assert nature_torso(in_frames=2)(scale_pixels(frames(3, in_frames=2))).shape == (3, 512)


def test_scale_pixels_maps_bytes_to_unit_floats() -> None:
    scaled = scale_pixels(torch.tensor([0, 128, 255], dtype=torch.uint8))
    assert scaled.dtype == torch.float32
    assert torch.allclose(scaled, torch.tensor([0.0, 128 / 255, 1.0]))


@pytest.mark.parametrize("batch", [1, 5])
def test_actor_critic_shapes(batch: int) -> None:
    logits, values = ActorCritic(NUM_ACTIONS)(frames(batch))
    assert logits.shape == (batch, NUM_ACTIONS)
    assert values.shape == (batch,)  # one value per state, even for a batch of one
    assert logits.dtype == values.dtype == torch.float32


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("batch", [1, 5])
def test_q_network_shapes(batch: int, dueling: bool) -> None:
    q = QNetwork(NUM_ACTIONS, dueling=dueling)(frames(batch))
    assert q.shape == (batch, NUM_ACTIONS)
    assert q.dtype == torch.float32


@torch.no_grad()
def test_dueling_q_is_value_plus_mean_free_advantage() -> None:
    net = QNetwork(NUM_ACTIONS, dueling=True)
    obs = frames(6)
    features = net.torso(scale_pixels(obs))
    advantage = net.advantage(features)
    assert net.value is not None
    expected = net.value(features) + advantage - advantage.mean(dim=1, keepdim=True)
    q = net(obs)
    assert torch.allclose(q, expected, atol=1e-6)
    # The advantage is mean-free, so the mean Q over actions is the state value.
    assert torch.allclose(q.mean(dim=1), net.value(features).squeeze(-1), atol=1e-6)


@torch.no_grad()
def test_plain_q_network_has_no_value_stream() -> None:
    net = QNetwork(NUM_ACTIONS, dueling=False)
    obs = frames(3)
    assert net.value is None
    assert torch.equal(net(obs), net.advantage(net.torso(scale_pixels(obs))))


def outputs(net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every network output as a tuple, whatever the head returns."""
    out = net(obs)
    return out if isinstance(out, tuple) else (out,)


@torch.no_grad()
@pytest.mark.parametrize("net_class", [ActorCritic, QNetwork])
def test_networks_scale_pixels_themselves(net_class: type[nn.Module]) -> None:
    net = net_class(NUM_ACTIONS)
    obs = frames(4)
    from_bytes, from_floats = outputs(net, obs), outputs(net, obs.float())  # raw 0-255 both
    for a, b in zip(from_bytes, from_floats, strict=True):
        assert torch.allclose(a, b, atol=1e-6)

    # Scaled once, inside: the same as running the heads on torso(x / 255) by hand.
    features = net.torso(obs.float() / 255)
    if isinstance(net, ActorCritic):
        expected = (net.policy(features), net.value(features).squeeze(-1))
    else:
        expected = (net.advantage(features),)
    for a, b in zip(from_bytes, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@torch.no_grad()
def test_actor_critic_starts_near_uniform() -> None:
    """The small policy-head init keeps early exploration from collapsing to one action."""
    logits, _ = ActorCritic(NUM_ACTIONS)(frames(8))
    probs = torch.softmax(logits, dim=1)
    assert torch.allclose(probs, torch.full_like(probs, 1 / NUM_ACTIONS), atol=0.02)


def test_gradients_reach_the_first_layer_from_uint8_input() -> None:
    net = ActorCritic(NUM_ACTIONS)
    logits, values = net(frames(2))
    (logits.sum() + values.sum()).backward()
    first_conv = net.torso[0]
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0


def test_one_thread_restores_the_thread_count_it_found_even_after_an_error() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="inside"), one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_bf16_acting_copy_computes_what_the_network_does_under_autocast() -> None:
    """Autocast casts each weight to bf16 at every call; the copy holds them cast once."""
    network = ActorCritic(NUM_ACTIONS).to(memory_format=torch.channels_last)
    copy = acting_copy(network, bf16=True)
    assert copy.torso[0].weight.dtype == torch.bfloat16
    assert copy.policy.weight.dtype == torch.float32  # the heads stay fp32, as in autocast
    obs = channels_last(frames(5))
    cpu = torch.device("cpu")
    with torch.inference_mode(), bf16_autocast(cpu, True):
        for want, got in zip(network(obs), copy(obs), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    with torch.no_grad():  # the network learns; the copy follows when refreshed
        network.policy.bias.add_(1.0)
    copy.load_state_dict(network.state_dict())
    with torch.inference_mode(), bf16_autocast(cpu, True):
        torch.testing.assert_close(copy(obs)[0], network(obs)[0], rtol=0, atol=0)


def test_select_stacks_is_indexing_that_keeps_channels_last() -> None:
    obs = channels_last(frames(12))
    index = torch.tensor([7, 0, 7, 11, 3])
    picked = select_stacks(obs, index)
    assert torch.equal(picked, obs[index])
    assert picked.is_contiguous(memory_format=torch.channels_last)
