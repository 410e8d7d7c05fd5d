"""PPO's learner alone: one minibatch's forward, backward and Adam step, and one act.

Why PPO compiles with static shapes in channels_last (src/atari_rl/ppo.py): each variant
times the Nature CNN actor-critic on a minibatch of --batch uint8 observations (the
anchors' 256), eager or `torch.compile`d with dynamic or static shapes, in the default
layout or channels_last, with and without bf16 autocast, and with the observations laid
out channels_last as well (what PPOAgent feeds it); then acting on 8 observations,
compiled with static and dynamic shapes. Random pixels: the time does not depend on them.

    python benchmarks/ppo_update.py            # ~4 minutes on 2 quiet cores (compiling)

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json
import time

import torch

from atari_rl.networks import ActorCritic, bf16_autocast, channels_last

CPU = torch.device("cpu")


def time_ms(network: torch.nn.Module, forward, batch: int, bf16: bool, train: bool,
            repeats: int, warmup: int = 5, input_channels_last: bool = False) -> float:
    """Mean milliseconds per call after `warmup` untimed calls (compilation happens there)."""
    obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8)
    if input_channels_last:  # as PPOAgent lays out a rollout once, before its minibatches
        obs = channels_last(obs)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, fused=True)
    for call in range(warmup + repeats):
        if call == warmup:
            start = time.perf_counter()
        if train:
            with bf16_autocast(CPU, bf16):
                logits, values = forward(obs)
            loss = logits.float().logsumexp(1).mean() + values.float().pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode(), bf16_autocast(CPU, bf16):
                forward(obs)
    return (time.perf_counter() - start) / repeats * 1000


def variant(name: str, batch: int, bf16: bool, compile_mode: str | None, weights_cl: bool,
            train: bool, repeats: int, input_cl: bool = False) -> dict:
    network = ActorCritic(4)
    if weights_cl:
        network = network.to(memory_format=torch.channels_last)
    forward = network
    if compile_mode is not None:
        forward = torch.compile(network, dynamic=compile_mode == "dynamic")
    ms = time_ms(network, forward, batch, bf16, train, repeats, input_channels_last=input_cl)
    print(f"{name:52s} {ms:8.2f} ms", flush=True)
    return {"variant": name, "batch": batch, "bf16": bf16, "compile": compile_mode,
            "channels_last": weights_cl, "input_channels_last": input_cl, "train": train,
            "ms": round(ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for bf16 in (False, True):
        for mode in (None, "dynamic", "static"):
            results.append(variant(f"minibatch, {mode or 'eager'}, bf16={bf16}", args.batch,
                                   bf16, mode, False, True, args.repeats))
    results.append(variant("minibatch, static, channels_last, bf16=True", args.batch, True,
                           "static", True, True, args.repeats))
    results.append(variant("minibatch, static, channels_last, input too, bf16=True",
                           args.batch, True, "static", True, True, args.repeats, input_cl=True))
    for mode in ("dynamic", "static"):
        results.append(variant(f"act on 8, {mode}, channels_last, input too, bf16=True", 8,
                               True, mode, True, False, 20 * args.repeats, input_cl=True))
    print(json.dumps({"benchmark": "ppo_update", "threads": args.threads, "variants": results}))


if __name__ == "__main__":
    main()
