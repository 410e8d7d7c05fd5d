"""What a run directory holds: every file and folder name, in one place.

A run directory is the whole record of one training run: training writes it, the analysis
commands (evaluate, record, plot, report) add their outputs beside, and anything that
reads a run (the commands, a study, the benchmarks, the tests) finds its files by these
names alone, so a name changed here changes everywhere.

    RUN_DIR/
      config.json               the settings, written when training starts or resumes
      metrics.csv               training's statistics, one row every log_every steps
      games.csv                 one row per finished training game
      events.csv                the cliff detector's signs of collapse, and the reactions
      tensorboard/              the same numbers, for TensorBoard
      checkpoints/
        step-000000004000/      one checkpoint (named by checkpoints.checkpoint_name)
          state.safetensors     its tensors
          state.json            everything else
        best.json               which checkpoint has the best rolling score
      policy.safetensors        the final network, written when training ends
      evaluation.json           `atari-rl evaluate`
      evaluation-random.json    `atari-rl evaluate --policy random`
      video.mp4                 `atari-rl record`, with video.json and video.gif
      figures/                  `atari-rl plot`
      report.html               `atari-rl report`
      trial.json                a study's trial only: how it ended

The agents shipped with the repository are run directories too, in pretrained/NAME/.

A study directory has its own names (study.json, runs/, logs/) in study.py and
study_run.py; its figures and report take the names a run's do.
"""

from pathlib import Path

# Training (training.py, metrics.py)
CONFIG_FILE = "config.json"  # training.train: the RunConfig as JSON; marks a run directory
METRICS_FILE = "metrics.csv"  # metrics.MetricsLogger: learner statistics, scores and speed
GAMES_FILE = "games.csv"  # metrics.MetricsLogger: step, env, raw score, length of each game
EVENTS_FILE = "events.csv"  # metrics.MetricsLogger.event: a cliff sign and what was done
TENSORBOARD_DIR = "tensorboard"  # metrics.MetricsLogger: TensorBoard's event files
FINAL_POLICY = "policy.safetensors"  # training.train at the end: the network's weights

# Checkpoints (checkpoints.py)
CHECKPOINT_DIR = "checkpoints"  # checkpoints.save_checkpoint: one folder per checkpoint
CHECKPOINT_TENSORS = "state.safetensors"  # in a checkpoint: weights, optimizer, agent tensors
CHECKPOINT_STATE = "state.json"  # in a checkpoint: counters, scores, detector, agent values
BEST_FILE = "best.json"  # in checkpoints/: the best checkpoint's name and rolling score

# Analysis (cli.py, report.py, plots.py)
EVALUATION_FILE = "evaluation.json"  # `evaluate`: scores of whole games and their protocol
RANDOM_EVALUATION_FILE = "evaluation-random.json"  # `evaluate --policy random`: the baseline
VIDEO_FILE = "video.mp4"  # `record`: whole games with the agent's action values beside
VIDEO_INFO_SUFFIX = ".json"  # `record`, beside the video and named after it: frames, scores
GIF_SUFFIX = ".gif"  # `record --gif`, beside the video and named after it: one frame a step
VIDEO_INFO_FILE = Path(VIDEO_FILE).with_suffix(VIDEO_INFO_SUFFIX).name
GIF_FILE = Path(VIDEO_FILE).with_suffix(GIF_SUFFIX).name
FIGURES_DIR = "figures"  # `plot`: one PNG per figure
REPORT_FILE = "report.html"  # `report`: one self-contained page about the run

# Shipped agents (policy.load_policy("NAME"), the commands' --pretrained NAME)
PRETRAINED_ROOT = Path(__file__).resolve().parents[2] / "pretrained"  # in a clone of the repo


def shipped_agents() -> list[str]:
    """The names of the agents in pretrained/, each a run directory with its config."""
    return sorted(p.parent.name for p in PRETRAINED_ROOT.glob(f"*/{CONFIG_FILE}"))


# Studies (study_run.py)
TRIAL_FILE = "trial.json"  # study_run: how a study's trial ended (status, score, error, log)
