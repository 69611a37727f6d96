"""The families as learners meet them: disjoint, diverse image pools; a score that separates nothing
from something; a first rung that tests something; an SB3 CLI that reports against baselines."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from agents.sb3.train import evaluate_episodes
from agents.scripted import NullAgent, OracleAgent, RandomAgent
from visrl_envs.core.imagery import PHOTOS, ImagePool, procedural_scene


def test_the_splits_share_no_packaged_photo_and_no_image() -> None:
    assert not set(PHOTOS["train"]) & set(PHOTOS["test"])
    digests = {}
    for split in ("train", "test"):
        env = gym.make("visrl/Jigsaw-v1", action_mode="numeric", split=split)
        digests[split] = {
            hashlib.sha1(env.unwrapped.board.image.tobytes()).hexdigest() for s in range(60) if env.reset(seed=s)
        }
        assert len(digests[split]) == 60, "every task seed gives its own image"
    assert not digests["train"] & digests["test"]


def test_procedural_scenes_are_seeded_and_diverse() -> None:
    a = procedural_scene(np.random.default_rng(7), 84)
    assert np.array_equal(a, procedural_scene(np.random.default_rng(7), 84))
    scenes = np.stack([procedural_scene(np.random.default_rng(s), 84) for s in range(50)]).astype(np.float32)
    assert scenes.std(axis=0).mean() > 40, "the scenes differ pixel by pixel"
    assert len({s.tobytes() for s in scenes}) == 50


def test_image_sources() -> None:
    rng = np.random.default_rng(0)
    scenes = ImagePool("train", source="scenes")
    photos = ImagePool("test", source="photos")
    assert scenes.draw(rng, 84).shape == photos.draw(rng, 84).shape == (84, 84, 3)
    with pytest.raises(ValueError, match="draws no photos"):
        ImagePool("train", images=["x.png"], source="scenes")


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_an_empty_svg_scores_nothing_and_the_oracle_everything(difficulty: int) -> None:
    null = evaluate_episodes(NullAgent(), "visrl/SvgRender-v1", 5, action_mode="text", difficulty=difficulty, size=64)
    oracle = evaluate_episodes(
        OracleAgent(), "visrl/SvgRender-v1", 5, action_mode="text", difficulty=difficulty, size=64
    )
    assert null.scores.max() <= 0.15 and null.scores.max() == 0.0
    assert oracle.scores.min() == 1.0


def test_the_numeric_palette_holds_the_targets_colours() -> None:
    import re

    for difficulty in range(4):
        env = gym.make("visrl/SvgRender-v1", action_mode="numeric", difficulty=difficulty)
        for seed in range(8):
            obs, _ = env.reset(seed=seed)
            base = env.unwrapped
            colours = set(re.findall(r"#[0-9a-f]{6}", base.target_code))
            if len(colours) <= len(base.palette):  # each colour, or one within 24 RGB units, can be drawn
                assert all(min(_distance(c, p) for p in base.palette) < 24 for c in colours)
            else:  # more colours than slots: the most frequent ones fill the palette
                assert set(base.palette) <= colours | set(base.palette[len(colours) :])
                assert all(c in colours for c in base.palette[: len(base.palette) // 2])
        rgb = [[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in base.palette]
        assert np.allclose(obs["palette"], np.array(rgb, dtype=np.float32).ravel())


def _distance(a: str, b: str) -> float:
    return float(np.linalg.norm([int(a[i : i + 2], 16) - int(b[i : i + 2], 16) for i in (1, 3, 5)]))


def test_the_swap_puzzles_first_rung_tests_something() -> None:
    random = evaluate_episodes(RandomAgent(), "visrl/Jigsaw-v1", 100, difficulty=0)
    oracle = evaluate_episodes(OracleAgent(), "visrl/Jigsaw-v1", 20, difficulty=0)
    assert random.scores.mean() < 0.6 and oracle.scores.mean() == 1.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "agents.sb3.train", *args], capture_output=True, text=True
    )


def test_the_sb3_cli_refuses_what_cannot_work_in_one_line() -> None:
    for args, message in (
        (("visrl/JigsawFull-v1", "--algo", "dqn"), "dqn cannot act in visrl/JigsawFull-v1's numeric action space"),
        (("visrl/Jigsaw-v1", "--algo", "sac"), "invalid choice: 'sac'"),
        (("visrl/Jigsaw-v1", "--difficulty", "7"), "difficulty must be an integer in [0, 3], got 7"),
        (("visrl/Nope-v1",), "unknown env 'visrl/Nope-v1'"),
    ):
        result = _cli(*args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, args


def test_the_sb3_cli_ends_with_baselines_and_cis() -> None:
    result = _cli("visrl/JigsawPair-v1", "--steps", "256", "--episodes", "4")
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    for agent in ("ppo", "random", "oracle"):
        assert agent in result.stdout
    assert "score [95% CI]" in result.stdout and "1.000 [1.000, 1.000]" in result.stdout
