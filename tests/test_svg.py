"""SvgRender: rewards, interfaces, targets, oracle."""

from __future__ import annotations

import gzip

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from visrl_envs.core.rewards import TargetSimilarity
from visrl_envs.envs.svg.env import extract_svg
from visrl_envs.envs.svg.generator import generate_svg, svg_document
from visrl_envs.envs.svg.raster import render_trusted

RED_SQUARE = svg_document('<rect x="64" y="64" width="128" height="128" fill="#e6194b"/>')


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_oracle_reaches_success_at_every_difficulty(difficulty: int) -> None:
    env = gym.make("visrl/SvgRender-v1", difficulty=difficulty, size=128)
    for seed in range(3):
        env.reset(seed=seed)
        _, reward, terminated, _, info = env.step(env.unwrapped.oracle_text())
        assert terminated and info["success"] and info["score"] >= 0.99
        assert reward == pytest.approx(1.0)  # similarity 1 (0.9 weight) + length 1 (0.1 weight)
    env.close()


def test_generator_is_deterministic_and_grows_with_difficulty() -> None:
    a = generate_svg(np.random.default_rng(5), 2)
    assert a == generate_svg(np.random.default_rng(5), 2)
    sizes = [np.mean([len(generate_svg(np.random.default_rng(s), d)) for s in range(20)]) for d in range(4)]
    assert sizes == sorted(sizes)
    assert "<text" in "".join(generate_svg(np.random.default_rng(s), 3) for s in range(20))
    assert "Gradient" in "".join(generate_svg(np.random.default_rng(s), 2) for s in range(20))


def test_episode_return_is_final_quality() -> None:
    env = gym.make("visrl/SvgRender-v1", size=64, max_turns=4)
    env.reset(seed=0)
    total = 0.0
    for text in (RED_SQUARE, "<answer>junk</answer>", svg_document('<circle cx="10" cy="10" r="5"/>')):
        _, reward, _, _, info = env.step(text)
        total += reward
    # the middle turn is a format error (-0.1) and leaves the picture as it was
    base = env.unwrapped
    quality = sum(base._parts.values())
    assert total == pytest.approx(quality - 0.1)
    assert set(info["reward_terms"]) == {"similarity", "length"}


def test_invalid_svg_keeps_the_picture() -> None:
    env = gym.make("visrl/SvgRender-v1", size=64)
    env.reset(seed=0)
    obs, _, _, _, before = env.step(RED_SQUARE)
    (first,) = obs["images"]
    obs, reward, _, _, info = env.step("<answer><svg><rect></svg></answer>")
    assert reward == -0.1 and "not well-formed" in info["action_error"]
    assert obs["images"] == ()  # nothing new to see
    assert np.array_equal(env.unwrapped.render_image, first)
    assert info["metrics"] == before["metrics"] and info["metrics"]["similarity"] > 0


def test_reward_fn_add_and_replace() -> None:
    calls: list[tuple[int, int]] = []

    def dark_fraction(render: np.ndarray, target: np.ndarray) -> float:
        calls.append(render.shape[:2])
        return float((render.mean(axis=2) < 128).mean())

    add = gym.make("visrl/SvgRender-v1", size=64, reward_fn=dark_fraction, reward_fn_weight=2.0)
    add.reset(seed=0)
    info = add.step(svg_document('<rect width="256" height="128" fill="black"/>'))[-1]
    assert info["reward_terms"]["custom"] == pytest.approx(2.0 * 0.5)
    replace = gym.make(
        "visrl/SvgRender-v1", size=64, reward_fn=dark_fraction, reward_fn_mode="replace", length_weight=0.0
    )
    replace.reset(seed=0)
    _, reward, _, _, info = replace.step(svg_document('<rect width="256" height="64" fill="black"/>'))
    assert reward == pytest.approx(0.25) and "custom" not in info["reward_terms"]
    assert calls == [(64, 64), (64, 64)]


def test_numeric_canvas_matches_cairosvg_and_rewards_gain() -> None:
    env = gym.make("visrl/SvgRender-v1", action_mode="numeric")
    obs, _ = env.reset(seed=0)
    assert (obs["canvas"] == 255).all()
    total = 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, reward, _, _, _ = env.step(env.unwrapped.sample_numeric_action(rng))
        total += reward
    base = env.unwrapped
    assert np.array_equal(obs["canvas"], render_trusted(base.canvas.svg(), 64))
    assert total == pytest.approx(sum(base._parts.values()))


def test_difficulty_zero_is_reproducible_with_primitives() -> None:
    # a difficulty-0 target is made of grid shapes from the palette: redraw them on the numeric canvas
    import re

    env = gym.make("visrl/SvgRender-v1", action_mode="numeric")
    env.reset(seed=4)
    code = env.unwrapped.target_code
    palette = env.unwrapped.palette  # the task's palette holds the target's colours
    info = None
    for m in re.finditer(r"<(rect|ellipse) ([^>]*)/>", code):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if m.group(1) == "rect":
            x, y, w, h = (float(attrs[k]) for k in ("x", "y", "width", "height"))
            shape = 0
        else:
            cx, cy, rx, ry = (float(attrs[k]) for k in ("cx", "cy", "rx", "ry"))
            x, y, w, h, shape = cx - rx, cy - ry, 2 * rx, 2 * ry, 1
        cells = [int(x // 16), int(y // 16), int((x + w) // 16) - 1, int((y + h) // 16) - 1]
        info = env.step(np.array([shape, *cells, palette.index(attrs["fill"])]))[-1]
    assert info is not None and info["success"]


def test_user_targets_svg_svgz_png(tmp_path) -> None:
    (tmp_path / "a.svg").write_text(RED_SQUARE)
    (tmp_path / "b.svgz").write_bytes(gzip.compress(RED_SQUARE.encode()))
    Image.fromarray(render_trusted(RED_SQUARE, 100)).save(tmp_path / "c.png")
    env = gym.make("visrl/SvgRender-v1", size=64, targets=tmp_path)
    seen = set()
    for seed in range(12):
        _obs, _ = env.reset(seed=seed)
        seen.add(env.unwrapped.target_code is None)
        _, _, _, _, info = env.step(env.unwrapped.oracle_text())
        assert info["score"] > (0.99 if env.unwrapped.target_code else 0.8)
    assert seen == {True, False}
    env.close()


def test_wide_png_target_is_letterboxed_on_white(tmp_path) -> None:
    Image.new("RGB", (200, 100), (0, 0, 255)).save(tmp_path / "wide.png")
    env = gym.make("visrl/SvgRender-v1", size=64, targets=[tmp_path / "wide.png"])
    env.reset(seed=0)
    target = env.unwrapped.target
    assert (target[:14] == 255).all() and (target[-14:] == 255).all()
    assert (target[20:44, :, 2] > 200).all() and (target[20:44, :, 0] < 60).all()


def test_extract_svg_variants() -> None:
    assert extract_svg(f"<think>plan</think><answer>{RED_SQUARE}</answer>") == RED_SQUARE
    assert extract_svg(f"Here:\n```svg\n{RED_SQUARE}\n```") == RED_SQUARE
    assert extract_svg(f"bare {RED_SQUARE} trailing") == RED_SQUARE


def test_scores_rank_pictures_sensibly() -> None:
    target = render_trusted(RED_SQUARE, 64)
    sim = TargetSimilarity(target)
    near = render_trusted(svg_document('<rect x="68" y="64" width="128" height="128" fill="#e6194b"/>'), 64)
    far = render_trusted(svg_document('<circle cx="30" cy="200" r="20" fill="#4363d8"/>'), 64)
    blank = np.full_like(target, 255)
    near_score = sim.terms(near)["similarity"]
    assert near_score < 1.0  # a 4-unit shift is not the target...
    assert near_score > sim.terms(blank)["similarity"]  # ...but is much closer than nothing
    assert sim.terms(near)["similarity"] > sim.terms(far)["similarity"]
