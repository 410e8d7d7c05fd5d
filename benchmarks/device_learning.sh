#!/usr/bin/env bash
# A learning run on a lent GPU machine (one H100, 16 cores): time-to-score in one short call.
#
# The device tool runs this from the repository root with `carry: [".whl"]`: that machine's
# Python 3.12 has torch but not ale-py, gymnasium, farama-notifications or zstandard (the
# replay memory's codec), so their wheels travel, fetched here once with
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#         ale-py==0.12.1 gymnasium==1.4.0 farama-notifications==0.0.6 zstandard==0.25.0
# (.whl is ignored by git: .git/info/exclude). It runs PROFILE first if set (loop
# profiles, say), then trains PRESET with many envs for TIME_LIMIT seconds through
# benchmarks/BENCHMARK.py --learning (SIGTERM: the run writes a checkpoint), scores GAMES
# evaluation games on that machine, and leaves the small files in $OUT: the log, the
# benchmark's JSON, the run's config, metrics and games, the evaluation, the network's
# weights, and the GPU's utilization every 10 s.
#
#     TIME_LIMIT=420 GAMES=100 bash benchmarks/device_learning.sh      # PPO (README)
#     BENCHMARK=dqn_breakout TIME_LIMIT=380 GAMES=100 bash benchmarks/device_learning.sh
#
# PRESET, STEPS and TRAIN_OPTIONS change the runs below. Locally, on the CPU, as a check:
#     OUT=/tmp/out TIME_LIMIT=30 GAMES=2 TRAIN_OPTIONS="--num-envs=8 --no-compile" \
#         PYTHON=.venv/bin/python bash benchmarks/device_learning.sh
set -euo pipefail
OUT=${OUT:-runs/device-out}
PYTHON=${PYTHON:-python3}
BENCHMARK=${BENCHMARK:-ppo_breakout}
case "$BENCHMARK" in
    # PPO: 64 envs keep 14 emulator threads busy and the GPU's acting batched; 16
    # minibatches keep them at 512 samples, one gradient step per 128 agent steps (the
    # preset's: one per 64). Not compiled: on a GPU the network's kernels are cuDNN's
    # anyway, and compiling would spend a minute of the budget.
    ppo_breakout) preset=ppo steps=10000000 options="--num-envs=64 --minibatches=16 \
--env-threads=14 --torch-threads=2 --no-compile --checkpoint-every=1000000" ;;
    # Double DQN: the H100 run of the README (64 envs, the next batch gathered in a thread).
    dqn_breakout) preset=dqn-sample-efficient steps=3000000 options="--num-envs=64 \
--env-threads=12 --torch-threads=2 --no-compile --prefetch --checkpoint-every=10000000" ;;
    *) preset="" steps="" options="" ;;
esac
PRESET=${PRESET:-$preset}
STEPS=${STEPS:-$steps}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-$options}
if [[ -z "$PRESET" || -z "$STEPS" ]]; then
    echo "device_learning.sh: BENCHMARK=$BENCHMARK needs PRESET and STEPS" >&2
    exit 2
fi
RUN=${RUN:-runs/$PRESET-gpu}
mkdir -p "$OUT"
: >"$OUT/log.txt"  # eight files at most come back: the profile's output goes in the log too
export PYTHONPATH="$PWD/src"
if ! "$PYTHON" -c "import ale_py, gymnasium, zstandard" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 \
        >"$OUT/gpu.csv" &
    trap 'kill %1 2>/dev/null || true' EXIT  # also when a step below fails
fi
"$PYTHON" -c "import torch, ale_py, os; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'ale-py', ale_py.__version__, 'cores', os.cpu_count())"
# PROFILE: benchmark scripts and their options, split on spaces, several split by ";" (they
# run one after the other, peers measured in the same call).
IFS=";" read -ra profiles <<<"${PROFILE:-}"
for one in "${profiles[@]}"; do
    read -ra profile <<<"$one"
    [[ ${#profile[@]} -gt 0 ]] || continue
    "$PYTHON" "benchmarks/${profile[0]}" "${profile[@]:1}" 2>&1 | tee -a "$OUT/log.txt"
done

train_options=()
for option in $TRAIN_OPTIONS; do train_options+=("--train-option=$option"); done
rm -rf "$RUN"
"$PYTHON" "benchmarks/$BENCHMARK.py" --skip-throughput --learning --learning-preset "$PRESET" \
    --learning-steps "$STEPS" --time-limit "${TIME_LIMIT:-420}" --games "${GAMES:-100}" \
    --run-dir "$RUN" --eval-option=--num-envs=50 "${train_options[@]}" 2>&1 | tee -a "$OUT/log.txt"
tail -n 1 "$OUT/log.txt" >"$OUT/result.json"
cp "$RUN"/config.json "$RUN"/metrics.csv "$RUN"/games.csv "$RUN"/evaluation.json "$OUT"/

# The network's weights from the last checkpoint, without the optimizer's moments or the
# replay memory (a checkpoint is 20 MB and more, over what comes back from that machine),
# as a policy file that `atari-rl evaluate`, `record` and `load_policy` read.
"$PYTHON" - "$RUN" "$OUT/policy.safetensors" <<'PY'
import sys
from pathlib import Path

from atari_rl.policy import load_policy
from atari_rl.training import latest_checkpoint

checkpoint, out = latest_checkpoint(Path(sys.argv[1])), Path(sys.argv[2])
load_policy(checkpoint).save(out)
print("policy of", checkpoint.name, "->", out)
PY
