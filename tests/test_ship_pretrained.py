"""tools/ship_pretrained.py: a run becomes a shipped agent with the same files as
pretrained/breakout-a2c, whatever its algorithm."""

import importlib.util
import json
from pathlib import Path

import pytest

import atari_rl
from atari_rl.run_files import (
    CONFIG_FILE,
    EVALUATION_FILE,
    FIGURES_DIR,
    FINAL_POLICY,
    GAMES_FILE,
    GIF_FILE,
    METRICS_FILE,
    RANDOM_EVALUATION_FILE,
    VIDEO_FILE,
)

TOOL = Path(__file__).resolve().parents[1] / "tools" / "ship_pretrained.py"


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_pretrained", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ship


def test_a_dqn_run_ships_with_the_files_of_the_a2c_agent(ship, tiny_dqn_run, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ship(tiny_dqn_run, "breakout-dqn", games=2, max_frames=300,
               root=tmp_path / "pretrained")
    shipped = {path.name for path in out.iterdir()}
    assert shipped == {FINAL_POLICY, CONFIG_FILE, METRICS_FILE, GAMES_FILE, FIGURES_DIR,
                       EVALUATION_FILE, RANDOM_EVALUATION_FILE, GIF_FILE}
    assert VIDEO_FILE not in shipped  # only the GIF ships
    assert len(list((out / FIGURES_DIR).glob("*.png"))) >= 3
    evaluation = json.loads((out / EVALUATION_FILE).read_text())
    assert evaluation["source"] == "pretrained/breakout-dqn"  # relative: shipped files travel
    assert len(evaluation["scores"]) == 2
    policy = atari_rl.load_policy(out)
    assert (policy.algo, policy.num_actions) == ("dqn", 4)


def test_a_checkpoint_ships_as_the_network_it_holds(ship, tiny_run, tmp_path, monkeypatch):
    import torch

    from atari_rl.checkpoints import list_checkpoints

    monkeypatch.chdir(tmp_path)
    checkpoint = list_checkpoints(tiny_run)[-1]
    out = ship(tiny_run, "breakout-a2c", checkpoint=checkpoint.name, games=1, max_frames=200,
               root=tmp_path / "pretrained")
    shipped, from_checkpoint = atari_rl.load_policy(out), atari_rl.load_policy(checkpoint)
    assert shipped.algo == "a2c"
    for (name, mine), theirs in zip(shipped.network.state_dict().items(),
                                    from_checkpoint.network.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
