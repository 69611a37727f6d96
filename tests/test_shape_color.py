"""ShapeColor-v0, the toy fixture of the trainer tests: solvable, chance at 1/n, the difficulty
ladder, disjoint splits, argument checks and the text grammar (the contract itself is checked by
tests/test_conformance.py, which covers every registered id)."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

import visrl_envs  # noqa: F401
from visrl_envs.envs.toy import OPTIONS_BY_DIFFICULTY, PALETTE

ENV_ID = "visrl/ShapeColor-v0"


@pytest.mark.parametrize("mode", ["text", "numeric"])
@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_the_oracle_always_scores_one(mode: str, difficulty: int) -> None:
    env = gym.make(ENV_ID, action_mode=mode, difficulty=difficulty)
    base = env.unwrapped
    for seed in range(40):
        env.reset(seed=seed)
        _, reward, terminated, truncated, info = env.step(
            base.oracle_text() if mode == "text" else base.oracle_numeric()
        )
        assert (reward, terminated, info["score"], info["success"]) == (1.0, True, 1.0, True)
    env.close()


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_random_answers_score_one_in_n(difficulty: int) -> None:
    env = gym.make(ENV_ID, action_mode="numeric", difficulty=difficulty)
    rng = np.random.default_rng(difficulty)
    scores = []
    for seed in range(800):
        env.reset(seed=seed)
        scores.append(env.step(env.unwrapped.sample_numeric_action(rng))[1])
    n = OPTIONS_BY_DIFFICULTY[difficulty]
    assert set(scores) <= {0.0, 1.0}
    assert abs(np.mean(scores) - 1 / n) < 0.05, (difficulty, np.mean(scores))
    env.close()


def test_null_answer_is_option_a() -> None:
    env = gym.make(ENV_ID)
    hits = []
    for seed in range(400):
        env.reset(seed=seed)
        hits.append(env.step(env.unwrapped.null_text())[-1]["score"])
    assert abs(np.mean(hits) - 0.5) < 0.07
    env.close()


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_difficulty_sets_the_options(difficulty: int) -> None:
    n = OPTIONS_BY_DIFFICULTY[difficulty]
    assert n == (2, 3, 4, 4)[difficulty]
    text = gym.make(ENV_ID, difficulty=difficulty)
    numeric = gym.make(ENV_ID, action_mode="numeric", difficulty=difficulty)
    assert numeric.action_space == gym.spaces.Discrete(n)
    assert numeric.observation_space["options"].shape == (n * len(PALETTE),)
    for seed in range(5):
        obs, info = text.reset(seed=seed)
        nobs, _ = numeric.reset(options={"task_seed": info["task_seed"]})
        listed = obs["text"].split("\n\n")[0].splitlines()[1:]
        names = [PALETTE[int(i)][0] for i in np.argmax(nobs["options"].reshape(n, -1), axis=1)]
        assert listed == [f"{'ABCD'[i]}. {name}" for i, name in enumerate(names)], "numeric options = listed options"
        assert len(set(names)) == n and info["prompt_spec"].answer["schema"]["enum"] == list("ABCD"[:n])
    text.close()
    numeric.close()


def _colour_pixels(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((np.linalg.norm(image.astype(np.float64) - colour, axis=2) < 70).sum())


def test_the_image_shows_the_answer_and_the_hardest_level_is_smaller_and_noisy() -> None:
    areas: dict[int, list[int]] = {2: [], 3: []}
    for difficulty in (2, 3):
        env = gym.make(ENV_ID, action_mode="numeric", difficulty=difficulty)
        base = env.unwrapped
        for seed in range(60):
            obs, _ = env.reset(seed=seed)
            counts = [_colour_pixels(obs["image"], rgb) for _, rgb in PALETTE]
            truth = base.options[base.truth]
            assert int(np.argmax(counts)) == truth, (difficulty, seed, counts)
            areas[difficulty].append(counts[truth])
            if difficulty == 3:
                corner = obs["image"][:6, :6].astype(np.float64)
                assert corner.std() > 5, "pixel noise at the hardest level"
        env.close()
    assert np.mean(areas[3]) < 0.3 * np.mean(areas[2])


def test_splits_never_share_an_image() -> None:
    def images(split: str) -> set[bytes]:
        env = gym.make(ENV_ID, action_mode="numeric", split=split)
        out = {env.reset(seed=seed)[0]["image"].tobytes() for seed in range(300)}
        env.close()
        return out

    train, test = images("train"), images("test")
    assert len(train) == len(test) == 300 and not train & test


def test_text_answers_follow_the_choice_grammar() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    right = "AB"[env.unwrapped.truth]
    for accepted in (
        f"<answer>{right}</answer>",
        f"<answer>({right.lower()}).</answer>",
        f"<think>hm</think><answer> {right} </answer>",
    ):
        env.reset(seed=0)
        assert env.step(accepted)[1] == 1.0, accepted
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(right)  # bare letters are not answers (core grammar)
    assert reward == -0.1 and not (truncated or terminated) and "<answer>" in info["action_error"]
    assert env.step(f"<answer>{right}</answer>")[1] == 1.0, "the retry counts"
    env.reset(seed=0)
    info = env.step("<answer>C</answer>")[-1]  # two options at difficulty 0
    assert info["action_error"] == "answer with one of A, B; got 'C'"
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step("<answer>" + "AB"[1 - env.unwrapped.truth] + "</answer>")
    assert (reward, terminated, info["score"], info["success"]) == (0.0, True, 0.0, False)
    assert obs["text"].startswith("Wrong: the answer is " + right)


def test_one_turn_episodes_and_small_text_frames() -> None:
    env = gym.make(ENV_ID, size=28, max_attempts=1)
    obs, info = env.reset(seed=0)
    assert obs["images"][0].shape == (28, 28, 3) and "Images are 28x28 px. You have 1 turn." in obs["text"]
    assert len(obs["text"]) < 300, "a short prompt"
    _, reward, terminated, truncated, _ = env.step("B")
    assert reward == -0.1 and truncated and not terminated
    env.close()
    assert gym.make(ENV_ID).unwrapped.horizon == 2 <= gym.spec(ENV_ID).max_episode_steps == 8


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 27}, ValueError, r"size must be an integer in \[28, 2048\], got 27 \(the numeric interface"),
        (
            {"size": 32, "action_mode": "numeric"},
            ValueError,
            r"in \[64, 2048\], got 32 \(the numeric interface needs >= 64",
        ),
        ({"size": "64"}, TypeError, "size must be an integer"),
        ({"size": 64.0}, TypeError, "size must be an integer"),
        ({"difficulty": 4}, ValueError, r"difficulty must be an integer in \[0, 3\], got 4"),
        ({"split": "val"}, ValueError, "split must be one of 'train', 'test'"),
        ({"max_attempts": 0}, ValueError, r"max_attempts must be an integer in \[1, 8\], got 0"),
        ({"colours": 3}, TypeError, "colours"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        gym.make(ENV_ID, **kwargs)


def test_thousands_of_episodes_are_cheap() -> None:
    env = gym.make(ENV_ID, difficulty=3)
    base = env.unwrapped
    start = time.perf_counter()
    for seed in range(1000):
        env.reset(seed=seed)
        env.step(base.oracle_text())
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"1000 text episodes took {elapsed:.1f} s"
    env.close()


def test_fixed_options_list_the_palette_in_order() -> None:
    env = gym.make("visrl/ShapeColor-v0", difficulty=1, fixed_options=True)
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert "A. red\nB. green\nC. blue" in obs["text"]
        assert env.step(env.unwrapped.oracle_text())[1] == 1.0
    with pytest.raises(TypeError, match="fixed_options must be True or False"):
        gym.make("visrl/ShapeColor-v0", fixed_options="yes")
