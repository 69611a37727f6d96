"""Jigsaw envs: board mechanics, scoring formulas, oracle optimality, chance levels."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from visrl_envs.envs.jigsaw.base import grid_string
from visrl_envs.envs.jigsaw.board import TileBoard, minimum_swaps, solving_swaps
from visrl_envs.envs.jigsaw.questions import DIRECTIONS, connection_accuracy, relative_direction


def _board(rows: int = 2, cols: int = 3) -> TileBoard:
    image = np.arange(60 * 90 * 3, dtype=np.uint32).reshape(60, 90, 3).astype(np.uint8)
    return TileBoard(image, rows, cols)


def test_swap_updates_image_and_count() -> None:
    board = _board()
    original = board.image.copy()
    assert board.solved
    assert board.swap(0, 5) == -2 and board.in_place == 4
    assert np.array_equal(board.image[:30, :30], original[30:, 60:])
    assert board.swap(5, 0) == 2 and board.solved
    assert np.array_equal(board.image, original)


@pytest.mark.parametrize(
    ("perm", "expected"), [([0, 1, 2], 0), ([1, 0, 2], 1), ([1, 2, 0], 2), ([1, 0, 3, 2], 2), ([3, 0, 1, 2], 3)]
)
def test_minimum_swaps(perm: list[int], expected: int) -> None:
    assert minimum_swaps(np.array(perm)) == expected
    assert len(solving_swaps(np.array(perm))) == expected


def test_adjacent_pairs_count() -> None:
    assert len(_board(2, 3).adjacent_pairs()) == 2 * 2 + 3 * 1
    assert _board(1, 3).adjacent_pairs() == [(0, 1), (1, 2)]


def test_grid_string() -> None:
    assert grid_string(2, 2) == "1 2\n3 4"
    assert grid_string(1, 3, [3, 1, 2]) == "3 1 2"


def test_connection_accuracy_hand_computed() -> None:
    truth = np.array([2, 0, 1])
    assert connection_accuracy(truth, truth, 1, 3) == 1.0
    # values 0,1 stand at 1,2 in truth (neighbours, right order); values 1,2 at 2,0 (not)
    assert connection_accuracy(np.array([0, 1, 2]), truth, 1, 3) == 0.5
    assert connection_accuracy(np.array([1, 0, 3, 2]), np.arange(4), 2, 2) == 0.5


def test_relative_direction() -> None:
    # 3 columns: home 0 is left of home 1, above home 3, upper-left of home 4
    assert DIRECTIONS[relative_direction(0, 1, 3)].startswith("{k} is directly to the left")
    assert DIRECTIONS[relative_direction(0, 3, 3)].startswith("{k} is directly above")
    assert DIRECTIONS[relative_direction(0, 4, 3)].startswith("{k} is on the upper left")
    assert DIRECTIONS[relative_direction(5, 1, 3)].startswith("{k} is on the lower right")


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_oracle_solves_in_minimum_swaps(difficulty: int) -> None:
    env = gym.make("visrl/Jigsaw-v1", difficulty=difficulty)
    for seed in range(5):
        env.reset(seed=seed)
        board = env.unwrapped.board
        need = minimum_swaps(board.perm)
        start_fraction = board.in_place / board.n
        total, steps = 0.0, 0
        while True:
            _, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_text())
            total += reward
            steps += 1
            if terminated or truncated:
                break
        assert info["success"] and terminated and steps == need
        # return = tiles gained (as a fraction) + solve bonus - step costs
        assert total == pytest.approx((1 - start_fraction) + 1.0 - 0.01 * need)
    env.close()


def test_reward_terms_of_a_swap() -> None:
    env = gym.make("visrl/Jigsaw-v1", difficulty=0, action_mode="numeric")  # 2x2
    env.reset(seed=3)
    board = env.unwrapped.board
    pairs = env.unwrapped.pairs
    k = next(i for i, (a, b) in enumerate(pairs) if board.perm[a] == b or board.perm[b] == a)
    before = board.in_place
    _, reward, _, _, info = env.step(k)
    gained = board.in_place - before
    assert info["reward_terms"]["progress"] == pytest.approx(gained / 4)
    assert info["reward_terms"]["step"] == -0.01
    assert reward == pytest.approx(gained / 4 - 0.01 + (1.0 if board.solved else 0.0))


def test_done_answer_ends_episode() -> None:
    env = gym.make("visrl/Jigsaw-v1", difficulty=2)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("<answer>done</answer>")
    assert terminated and not info["success"] and reward == 0.0


def test_adjacent_swaps_variant() -> None:
    env = gym.make("visrl/Jigsaw-v1", difficulty=1, swaps="adjacent")  # 3x3
    assert env.unwrapped.numeric_action_space.n == 12
    env.reset(seed=0)
    info = env.step('<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 9}}</tool_call>')[-1]
    assert "do not share an edge" in info["action_error"]
    info = env.step('<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>')[-1]
    assert info["action_error"] is None


def test_random_agent_is_near_chance() -> None:
    env = gym.make("visrl/Jigsaw-v1", difficulty=2, action_mode="numeric")
    rng = np.random.default_rng(0)
    scores = []
    for seed in range(60):
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, info = env.step(env.unwrapped.sample_numeric_action(rng))
            if terminated or truncated:
                break
        scores.append(info["score"])
    assert 0.5 / 9 < np.mean(scores) < 2.5 / 9


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_question_oracles(difficulty: int) -> None:
    for env_id in ("visrl/JigsawFull-v1", "visrl/JigsawPair-v1"):
        env = gym.make(env_id, difficulty=difficulty)
        for seed in range(4):
            env.reset(seed=seed)
            _, reward, terminated, _, info = env.step(env.unwrapped.oracle_text())
            assert terminated and info["success"] and reward == pytest.approx(1.5)
        env.close()


def test_full_answer_formats_and_scoring() -> None:
    env = gym.make("visrl/JigsawFull-v1", grid=(1, 3))
    env.reset(seed=0)
    truth = [int(v) + 1 for v in env.unwrapped.board.perm]
    assert env.step("<answer>`" + ", ".join(map(str, truth)) + "`</answer>")[-1]["success"]
    env.reset(seed=0)
    wrong = [truth[1], truth[0], truth[2]]
    _, reward, _, _, info = env.step(f"<answer>{' '.join(map(str, wrong))}</answer>")
    assert info["score"] == pytest.approx(1 / 3) and reward == pytest.approx(1 / 3 + 0.5)
    env.reset(seed=0)
    info = env.step("<answer>1 2</answer>")[-1]
    assert "exactly 3 integers" in info["action_error"]
    exact = gym.make("visrl/JigsawFull-v1", grid=(1, 3), scoring="exact")
    exact.reset(seed=0)
    assert exact.step(f"<answer>{' '.join(map(str, wrong))}</answer>")[1] == pytest.approx(0.5)


def test_pair_text_and_numeric_agree() -> None:
    text = gym.make("visrl/JigsawPair-v1", difficulty=2)
    numeric = gym.make("visrl/JigsawPair-v1", difficulty=2, action_mode="numeric")
    for seed in range(5):
        text.reset(seed=seed)
        numeric.reset(seed=seed)
        for choice in range(8):
            text.reset(seed=seed)
            numeric.reset(seed=seed)
            r_text = text.step(numeric.unwrapped.numeric_to_text(choice))[1]
            r_num = numeric.step(choice)[1]
            assert r_text == r_num
    obs, _ = numeric.reset(seed=1)
    assert obs["query"].sum() == 2


def test_pair_numeric_answer_ignores_the_query_order() -> None:
    # on a 1-D board the numeric answer is "is the board in its original order?", whichever of k, l
    # comes first in the question: no parity of image and query to learn
    env = gym.make("visrl/JigsawPair-v1", difficulty=0, action_mode="numeric")
    seen = set()
    for seed in range(40):
        env.reset(seed=seed)
        base = env.unwrapped
        in_order = bool(np.array_equal(base.board.perm, np.arange(2)))
        assert base.oracle_numeric() == (0 if in_order else 1)
        seen.add((base.pair[0] < base.pair[1], in_order))
    assert len(seen) == 4  # both query orders, both arrangements


def test_pair_choices_are_one_dimensional_on_a_row() -> None:
    env = gym.make("visrl/JigsawPair-v1", grid=(1, 4))
    obs, _ = env.reset(seed=0)
    assert "(A)" in obs["text"] and "(B)" in obs["text"] and "(C)" not in obs["text"]
    assert "left" in obs["text"]


def test_overlays_and_masking() -> None:
    plain = gym.make("visrl/Jigsaw-v1", difficulty=0)  # 2x2
    marked = gym.make("visrl/Jigsaw-v1", difficulty=0, labels=True, grid_lines=True)
    masked = gym.make("visrl/Jigsaw-v1", difficulty=0, mask_ratio=0.2)
    a, b, c = (e.reset(seed=0)[0]["images"][0] for e in (plain, marked, masked))
    assert (a != b).any() and (b[:, 167:169] == 255).all()
    assert (c[:2] == 0).all() and not (a[:2] == 0).all()


def test_user_images(tmp_path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    env = gym.make("visrl/Jigsaw-v1", images=tmp_path, size=84)
    obs, _ = env.reset(seed=0)
    assert obs["images"][0].shape == (84, 84, 3)
    with pytest.raises(FileNotFoundError):
        gym.make("visrl/Jigsaw-v1", images=tmp_path / "missing").reset(seed=0)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        gym.make("visrl/Jigsaw-v1", size=100, difficulty=1)  # 3x3 does not divide 100
    with pytest.raises(ValueError):
        gym.make("visrl/Jigsaw-v1", swaps="diagonal")
    with pytest.raises(ValueError):
        gym.make("visrl/Jigsaw-v1", difficulty=7)


def test_ladder_levels() -> None:
    from visrl_envs.envs.jigsaw import DIFFICULTY_LEVELS, LADDER, JigsawSwapEnv

    grids = [gym.make("visrl/Jigsaw-v1", level=level).unwrapped.grid for level in range(len(LADDER))]
    assert grids == [(2, 1), (3, 1), (2, 2), (3, 3), (4, 4), (4, 4), (4, 4)]
    assert gym.make("visrl/Jigsaw-v1", level=5).unwrapped.mask_ratio == 0.1
    assert gym.make("visrl/Jigsaw-v1", level=6).unwrapped.low_texture_share == 0.3
    for difficulty, level in JigsawSwapEnv.difficulty_levels.items():  # the puzzle starts at 2x2
        assert gym.make("visrl/Jigsaw-v1", difficulty=difficulty).unwrapped.level == level
    assert [JigsawSwapEnv.difficulty_levels[d] for d in range(4)] == [2, 3, 4, 6]
    for difficulty, level in DIFFICULTY_LEVELS.items():  # the questions keep Jigsaw-R1's 2x1 start
        assert gym.make("visrl/JigsawPair-v1", difficulty=difficulty).unwrapped.level == level
    pair = gym.make("visrl/JigsawPair-v1", level=1)
    assert pair.unwrapped.n_choices == 2
    orientations = {pair.reset(seed=s)[0]["text"].count("left") > 0 for s in range(12)}
    assert orientations == {True, False}  # 3x1 and 1x3 both occur
    with pytest.raises(ValueError):
        gym.make("visrl/Jigsaw-v1", level=7)
