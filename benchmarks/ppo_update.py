"""PPO's learner alone: one minibatch's forward, backward and Adam step, and one act.

Why PPO compiles with static shapes in channels_last (src/atari_rl/ppo.py): each variant
times the Nature CNN actor-critic on a minibatch of --batch uint8 observations (the
anchors' 256), eager or `torch.compile`d with dynamic or static shapes, in the default
layout or channels_last, with and without bf16 autocast, and with the observations laid
out channels_last as well (what PPOAgent feeds it); then acting on 8 observations,
compiled with static and dynamic shapes, and on one thread (as PPOAgent acts) with and
without the bf16 acting copy; and gathering a minibatch from a rollout, by indexing and
by `select_stacks`. Random pixels: the time does not depend on them.

    python benchmarks/ppo_update.py            # ~4 minutes on 2 quiet cores (compiling)
    python benchmarks/ppo_update.py --skip-bf16    # no bf16 rows, for a CPU without bf16

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json
import time

import torch

from atari_rl.networks import (
    ActorCritic,
    acting_copy,
    bf16_autocast,
    channels_last,
    one_thread,
    select_stacks,
)

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


def act_ms(copy: bool, repeats: int) -> float:
    """PPOAgent's act on 8 observations, compiled, on one thread as in training: with
    autocast casting the weights at each call, or from the bf16 acting copy."""
    network = ActorCritic(4).to(memory_format=torch.channels_last)
    if copy:
        network = acting_copy(network, bf16=True)
    forward = torch.compile(network, dynamic=False)
    obs = channels_last(torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8))
    with one_thread(), torch.inference_mode(), bf16_autocast(CPU, True):
        for _ in range(10):
            forward(obs)
        start = time.perf_counter()
        for _ in range(repeats):
            forward(obs)
    return (time.perf_counter() - start) / repeats * 1000


def gather_ms(rows: bool, repeats: int) -> float:
    """A minibatch of 256 of a rollout's 1,024 channels_last stacks: obs[index], or
    `select_stacks`'s gather of whole rows."""
    obs = channels_last(torch.randint(0, 256, (1024, 4, 84, 84), dtype=torch.uint8))
    index = torch.randperm(1024)[:256]
    start = time.perf_counter()
    for _ in range(repeats):
        select_stacks(obs, index) if rows else obs[index]
    return (time.perf_counter() - start) / repeats * 1000


def bf16_rows(batch: int, repeats: int) -> list[dict]:
    """The bf16 variants: the minibatch in channels_last, and acting on 8 observations."""
    results = [variant("minibatch, static, channels_last, bf16=True", batch, True,
                       "static", True, True, repeats),
               variant("minibatch, static, channels_last, input too, bf16=True",
                       batch, True, "static", True, True, repeats, input_cl=True)]
    for mode in ("dynamic", "static"):
        results.append(variant(f"act on 8, {mode}, channels_last, input too, bf16=True", 8,
                               True, mode, True, False, 20 * repeats, input_cl=True))
    for copy in (False, True):  # interleaved rounds: the machine's speed drifts
        name = f"act on 8, one thread, {'bf16 acting copy' if copy else 'autocast'}"
        times = [act_ms(copy, 20 * repeats) for _ in range(2)]
        print(f"{name:52s} {min(times):8.2f} ms", flush=True)
        results.append({"variant": name, "batch": 8, "train": False, "ms": round(min(times), 2)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-bf16", action="store_true",
                        help="no bf16 rows: for a CPU without AVX-512 BF16 or AMX, where "
                             "bf16 is emulated (about 11x slower than fp32 on AVX2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for bf16 in (False,) if args.skip_bf16 else (False, True):
        for mode in (None, "dynamic", "static"):
            results.append(variant(f"minibatch, {mode or 'eager'}, bf16={bf16}", args.batch,
                                   bf16, mode, False, True, args.repeats))
    # what PPOAgent runs where bf16 is off
    results.append(variant("minibatch, static, channels_last, input too, bf16=False",
                           args.batch, False, "static", True, True, args.repeats, input_cl=True))
    if not args.skip_bf16:
        results += bf16_rows(args.batch, args.repeats)
    for rows in (False, True):
        name = f"gather 256 of 1,024 stacks, {'select_stacks' if rows else 'obs[index]'}"
        ms = gather_ms(rows, 4 * args.repeats)
        print(f"{name:52s} {ms:8.2f} ms", flush=True)
        results.append({"variant": name, "batch": 256, "train": False, "ms": round(ms, 2)})
    print(json.dumps({"benchmark": "ppo_update", "threads": args.threads, "variants": results}))


if __name__ == "__main__":
    main()
