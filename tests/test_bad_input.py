"""Bad input gets one clear error at the right time: user files when the env is built, arguments
with a type check, a bound and a message, a user's reward_fn named when it fails."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from visrl_envs.core.feedback import RewardFunctionError

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256"><rect width="90" height="90" fill="#e6194b"/></svg>'
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (0, 0, 0)).save(tiny)
    fake = tmp_path / "fake.png"
    fake.write_text("PNG? no")
    bad_svg = tmp_path / "bad.svg"
    bad_svg.write_text("<svg><rect></svg>")
    return {"good": good, "truncated": truncated, "text": text, "tiny": tiny, "fake": fake, "bad_svg": bad_svg}


MAKERS = {
    "svg targets": lambda paths: gym.make("visrl/SvgRender-v1", targets=paths),
    "jigsaw images": lambda paths: gym.make("visrl/Jigsaw-v1", images=paths),
}


@pytest.mark.parametrize("maker", list(MAKERS))
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated", r"truncated\.png is not a readable image"),
        ("fake", r"fake\.png is not a readable image"),
        ("text", r"notes\.txt has an unsupported type; accepted: .*\.png"),
        ("tiny", r"tiny\.png is 1x1 px; images need 32 px a side"),
    ],
)
def test_bad_user_files_fail_when_the_env_is_built(files: dict[str, Path], maker: str, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MAKERS[maker]([files["good"], files[name]])


@pytest.mark.parametrize("maker", list(MAKERS))
def test_empty_and_missing_file_arguments(maker: str, tmp_path: Path) -> None:
    for empty in ("", "  ", []):
        with pytest.raises(ValueError, match="are empty"):
            MAKERS[maker](empty)
    with pytest.raises(FileNotFoundError, match="missing"):
        MAKERS[maker](tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no \w+ files \(.*\.png.*\) found"):
        MAKERS[maker](tmp_path)  # an empty directory


def test_an_svg_target_that_is_not_svg_fails_at_build(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"bad\.svg is not a usable svg program: not well-formed"):
        gym.make("visrl/SvgRender-v1", targets=[files["bad_svg"]])


def _transparent_png(path: Path, mode: str) -> Path:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[16:48, 16:48] = (200, 30, 30, 255)  # an opaque red square on a fully transparent ground
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":
        image = image.convert("P")  # a palette with a transparent index
    elif mode == "LA":
        image = Image.fromarray(np.stack([rgba[..., 0], rgba[..., 3]], axis=2), "LA")
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_transparency_is_composited_onto_white(tmp_path: Path, mode: str) -> None:
    png = _transparent_png(tmp_path / f"{mode}.png", mode)
    svg = gym.make("visrl/SvgRender-v1", targets=[png], size=64, action_mode="numeric")
    target = svg.reset(seed=0)[0]["target"]
    assert (target[:4, :4] == 255).all(), "transparent pixels are white, not black"
    jig = gym.make("visrl/Jigsaw-v1", images=[png], size=64, action_mode="numeric")
    board = jig.unwrapped
    jig.reset(seed=0)
    assert (board.board.tiles.reshape(-1, 3) == 255).all(axis=1).mean() > 0.3, "the white ground survives"


def test_grayscale_is_expanded(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :], (64, 1)), "L").save(gray)
    obs = gym.make("visrl/Jigsaw-v1", images=[gray], size=64, action_mode="numeric").reset(seed=0)[0]
    assert obs["image"].shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 100000}, ValueError, r"size must be an integer in \[64, 2048\], got 100000"),
        ({"size": 10}, ValueError, r"size must be an integer in \[64, 2048\], got 10"),
        ({"size": 64.5}, TypeError, "size must be an integer"),
        ({"difficulty": True}, TypeError, "difficulty must be an integer"),
        ({"difficulty": 4}, ValueError, r"difficulty must be an integer in \[0, 3\], got 4"),
        ({"split": "val"}, ValueError, "split must be one of 'train', 'test'"),
        ({"action_mode": "pixels"}, ValueError, "action_mode must be one of 'text', 'numeric'"),
        ({"weights": {"pixel": 1, "colour": 2}}, ValueError, r"unknown terms \['colour'\]"),
        ({"weights": "pixel"}, TypeError, "weights must be a SimilarityWeights or a dict"),
        ({"reward_fn": "dreamsim"}, TypeError, "reward_fn must be a callable, got 'dreamsim'"),
        ({"reward_fn_mode": "replace"}, ValueError, "apply to a reward_fn; none was given"),
        ({"reward_fn": np.mean, "reward_fn_mode": "replace", "reward_fn_weight": 2.0}, ValueError, "'add' only"),
        ({"max_turns": 0}, ValueError, r"max_turns must be an integer in \[1, 1000\]"),
        ({"length_weight": 1.0}, ValueError, r"length_weight must be a number in \[0.0, 1.0\)"),
        ({"render_timeout_s": float("nan")}, ValueError, "render_timeout_s must be a number"),
    ],
)
def test_svg_arguments_are_checked(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        gym.make("visrl/SvgRender-v1", **kwargs)


def test_weights_as_a_dict_work() -> None:
    env = gym.make("visrl/SvgRender-v1", weights={"pixel": 1})
    assert env.unwrapped.weights.normalised() == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 10}, ValueError, r"size must be an integer in \[64, 2048\]"),
        ({"grid": 4}, TypeError, r"grid must be a \(rows, cols\) pair"),
        ({"grid": (1, 1)}, ValueError, "2 to 64 tiles"),
        ({"mask_ratio": 0.5}, ValueError, r"mask_ratio must be a number in \[0.0, 0.5\)"),
        ({"labels": "yes"}, TypeError, "labels must be True or False"),
        ({"level": 9}, ValueError, r"level must be an integer in \[0, 6\]"),
        ({"swaps": "diagonal"}, ValueError, "swaps must be one of 'any', 'adjacent'"),
        ({"image_source": "web"}, ValueError, "image_source must be 'mixed', 'photos' or 'scenes'"),
    ],
)
def test_jigsaw_arguments_are_checked(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        gym.make("visrl/Jigsaw-v1", **kwargs)


def broken_metric(render: np.ndarray, target: np.ndarray) -> float:
    raise ZeroDivisionError("oops")


def nan_metric(render: np.ndarray, target: np.ndarray) -> float:
    return float("nan")


@pytest.mark.parametrize(
    ("fn", "message"), [(broken_metric, "raised ZeroDivisionError: oops"), (nan_metric, "returned nan")]
)
def test_a_failing_reward_fn_is_named_not_a_nan_reward(fn: object, message: str) -> None:
    env = gym.make("visrl/SvgRender-v1", reward_fn=fn)
    env.reset(seed=0)
    with pytest.raises(RewardFunctionError, match=f"reward_fn {fn.__name__} {message}"):
        env.step(f"<answer>{SVG}</answer>")


def test_task_seed_outside_the_split_says_where_to_get_one() -> None:
    env = gym.make("visrl/Jigsaw-v1", split="test")
    with pytest.raises(ValueError, match=r"in the test split's range \[2147483648, 4294967296\).*info\['task_seed'\]"):
        env.reset(options={"task_seed": 5})
