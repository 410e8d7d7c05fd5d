"""The shipped agents: each loads by name, and evaluate, record and report take it with
--pretrained; the A2C agent plays Breakout through gymnasium's own wrappers, exactly as the
README's example does."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

import atari_rl
from atari_rl.algorithms import PROBABILITIES, Q_VALUES
from atari_rl.cli import main
from atari_rl.config import from_dict, resolve
from atari_rl.run_files import CONFIG_FILE, PRETRAINED_ROOT, REPORT_FILE, VIDEO_INFO_FILE

README = Path(__file__).resolve().parents[1] / "README.md"
NAME = "breakout-a2c"  # the README example's agent
SHIPPED = {"breakout-a2c": ("a2c", PROBABILITIES), "breakout-dqn": ("dqn", Q_VALUES)}


def _shipped(name: str):
    return pytest.param(name, marks=pytest.mark.skipif(
        not (PRETRAINED_ROOT / name).is_dir(), reason=f"pretrained/{name} is not in this checkout"))


EVERY_AGENT = pytest.mark.parametrize("name", [_shipped(name) for name in SHIPPED])
pytestmark = pytest.mark.skipif(not (PRETRAINED_ROOT / NAME).is_dir(),
                                reason="pretrained/breakout-a2c is not in this checkout")


def readme_example() -> str:
    """The README's Python example that plays a whole game with the shipped agent."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(block for block in blocks if "ALE/Breakout-v5" in block)


def test_the_readme_example_plays_with_the_shipped_agent(capsys):
    # The example plays a whole game; a cap on its loop keeps the test to a few hundred steps.
    code = readme_example().replace("while not done:", "for _ in range(400):\n    if done: break")
    exec(compile(code, "README.md", "exec"), {})
    score = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert score >= 5, "the shipped agent should break bricks within 400 steps"


@EVERY_AGENT
def test_load_policy_by_name_maps_stacks_to_actions(name):
    policy = atari_rl.load_policy(name)
    assert (policy.algo, policy.game, policy.num_actions) == (SHIPPED[name][0], "breakout", 4)
    obs = np.zeros((3, 4, 84, 84), dtype=np.uint8)
    for actions in (policy.act(obs), policy.act(obs, greedy=False), policy.act(obs, sample=True)):
        assert actions.shape == (3,) and actions.dtype == np.int64
        assert ((actions >= 0) & (actions < 4)).all()


def test_unknown_pretrained_name_is_one_line(capsys):
    assert main(["evaluate", "--pretrained", "pong-a2c"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown pretrained agent 'pong-a2c'" in err and NAME in err


@EVERY_AGENT
def test_evaluate_pretrained_writes_under_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--pretrained", name, "--games", "2", "--num-envs", "2",
                 "--max-frames", "2000"]) == 0
    result = json.loads((tmp_path / f"runs/pretrained-{name}/evaluation.json").read_text())
    assert len(result["scores"]) == 2 and result["source"] == f"pretrained/{name}"


@EVERY_AGENT
def test_record_pretrained_draws_the_agents_own_values(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["record", "--pretrained", name, "--scale", "1", "--max-frames", "120"]) == 0
    info = json.loads((tmp_path / f"runs/pretrained-{name}" / VIDEO_INFO_FILE).read_text())
    assert info["values"] == SHIPPED[name][1] and info["source"] == f"pretrained/{name}"
    assert info["frames"] == info["games"][0]["frames"] > 120


@EVERY_AGENT
def test_report_pretrained_shows_its_training_and_evaluation(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--pretrained", name]) == 0
    page = (tmp_path / f"runs/pretrained-{name}" / REPORT_FILE).read_text()
    assert "trained policy" in page and "random policy" in page  # the shipped evaluations
    assert page.count("data:image/png;base64,") >= 6  # the shipped figures


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_shipped_files_hold_no_absolute_path_of_the_machine_they_were_made_on():
    """Nor do the results in the repository: JSON strings that start with '/', and any
    text file that names a machine's folder."""
    results = PRETRAINED_ROOT.parent / "results"
    for path in sorted(PRETRAINED_ROOT.rglob("*.json")) + sorted(results.rglob("*.json")):
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith("/")]
        assert absolute == [], path
    texts = [p for root in (PRETRAINED_ROOT, results) for p in sorted(root.rglob("*"))
             if p.suffix in (".json", ".csv", ".md", ".txt", ".toml")]
    assert len(texts) > 10
    for path in texts:
        text = path.read_text()
        assert not any(folder in text for folder in ("/work/", "/tmp/", "/root/", "/home/")), path


def test_evaluate_records_what_it_played_without_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", "--pretrained", NAME, "--games", "1", "--num-envs", "1",
                 "--max-frames", "400", "--protocols", "greedy,sticky", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["source"] == f"pretrained/{NAME}"
    assert list(result["protocols"]) == ["greedy", "sticky"]
    assert result["mean"] == result["protocols"]["greedy"]["mean"]  # the first is the headline
    sticky = result["protocols"]["sticky"]["protocol"]
    assert sticky["sticky_action_prob"] == 0.25 and sticky["actions"].startswith("epsilon")
    assert len(result["protocols"]["sticky"]["scores"]) == 1


@pytest.mark.parametrize("name", [_shipped("breakout-dqn")])
def test_the_dqn_3h_preset_trains_as_breakout_dqn_was_trained(name):
    # The run started from dqn-fast plus options, for 8 M steps, stopped at 3 hours (6.2 M).
    shipped = from_dict(json.loads((PRETRAINED_ROOT / name / CONFIG_FILE).read_text()))
    preset = resolve(None, "dqn-3h", {})
    differ = {field.name for field in dataclasses.fields(preset)
              if getattr(preset, field.name) != getattr(shipped, field.name)}
    assert differ == {"preset", "steps", "checkpoint_every"}
