"""Saving, loading, printing and viewing trajectories (agents/vlm/workbench/store.py, agents/vlm/workbench/viewer.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import visrl_envs  # noqa: F401
from agents.vlm.policies.tiny import build_tokenizer
from agents.vlm.rollout.trajectory import Step, Trajectory
from agents.vlm.workbench.store import StoreError, load_meta, load_trajectories, save_trajectories, transcript, turns
from agents.vlm.workbench.viewer import add_arguments, highlight, run, write_viewer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu-vsync",
    "--disable-frame-rate-limit",
]
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
HOSTILE_ACTION = (
    "<think>ok</think>" + HOSTILE + '<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>'
)
ROUGH_SVG = '<answer><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256"><rect width="90" height="60"/></svg></answer>'
SPECIAL_LOGPROBS = [0.0, -0.0, -1e-300, -5e-324, -0.1, -1 / 3, float("-inf"), float("nan"), -123.456789012345678]


def _user(first: int, count: int, text: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image", "index": k} for k in range(first, first + count)]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def _episode(
    tok: Any,
    env_id: str,
    kwargs: dict[str, Any],
    seed: int,
    group: int,
    member: int,
    actions: list[str | None] | None = None,
    max_steps: int = 3,
) -> Trajectory:
    """A real episode of ``env_id`` (oracle actions unless given), recorded as the rollout collector would."""
    rng = np.random.default_rng(1000 * group + member)
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=seed)
    spec = info["prompt_spec"]
    traj = Trajectory(
        env_id=env_id,
        task_seed=seed,
        group=group,
        member=member,
        env_kwargs=dict(kwargs),
        prompt_spec=spec.to_dict(),
        messages=[{"role": "system", "content": "You are a careful agent."}, _user(0, len(obs["images"]), obs["text"])],
        tools=list(spec.tools),
        prompt_ids=tok.encode(obs["text"]),
        images=list(obs["images"]),
        prompt_images=len(obs["images"]),
        policy="oracle" if actions is None else "scripted",
    )
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for turn in range(max_steps):
        given = None if actions is None else actions[turn % len(actions)]
        action = env.unwrapped.oracle_text() if given is None else given
        ids = [*tok.encode(action), eos]
        start = len(traj.completion_ids)
        traj.append(ids, 1, list(rng.normal(-1.0, 1.0, len(ids))))
        traj.messages.append({"role": "assistant", "content": action})
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated or turn == max_steps - 1
        step_info = {k: v for k, v in info.items() if k != "prompt_spec"}
        traj.steps.append(
            Step(
                action,
                float(reward),
                terminated,
                truncated,
                step_info,
                "" if done else obs["text"],
                0 if done else len(obs["images"]),
                (start, len(traj.completion_ids)),
            )
        )
        if done:
            traj.finish = "terminated" if terminated else "truncated" if truncated else "turn_limit"
            break
        traj.messages.append(_user(len(traj.images), len(obs["images"]), obs["text"]))
        traj.images += list(obs["images"])
        traj.append(tok.encode(obs["text"]), 0)
    env.close()
    return traj


@pytest.fixture(scope="module")
def tok() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def trajectories(tok: Any) -> list[Trajectory]:
    jig, svg = ("visrl/Jigsaw-v1", {"size": 84}), ("visrl/SvgRender-v1", {"size": 64})
    trajs = [_episode(tok, *jig, seed=3, group=0, member=m) for m in range(2)]
    trajs.append(_episode(tok, *jig, seed=3, group=0, member=2, actions=[HOSTILE_ACTION, "<tool_call>{oops"]))
    trajs.append(_episode(tok, *svg, seed=5, group=1, member=0))
    trajs.append(_episode(tok, *svg, seed=5, group=1, member=1, actions=[ROUGH_SVG, None]))
    trajs[-1].logprobs[: len(SPECIAL_LOGPROBS)] = SPECIAL_LOGPROBS
    broken = _episode(tok, *svg, seed=6, group=2, member=0, max_steps=1)
    broken.finish, broken.env_error = "env_error", '<img src=y onerror="window.pwned=3">render worker died'
    return [*trajs, broken]


def _hand_made() -> Trajectory:
    """A trajectory with odd image shapes, a steps-only history and awkward floats."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(5, 7, 3), (5, 7), (6, 2, 1), (4, 4, 4)]]
    info = {"score": 0.25, "success": False, "reward_terms": {"a": 0.1 + 0.2}, "action_error": None, "turn": 1}
    step = Step("<answer>x\x00\x13\ud800é</answer>", 0.1 + 0.2, False, True, info, "", 0, (0, 3), finished_turn=False)
    return Trajectory(
        "visrl/Made-v0",
        2**40,
        7,
        1,
        completion_ids=[5, 6, 7],
        mask=[1, 1, 1],
        logprobs=[-0.0, 1e-310, float("inf")],
        images=images,
        prompt_images=4,
        steps=[step],
        finish="truncated",
        policy="hand",
    )


def _assert_same(a: Trajectory, b: Trajectory) -> None:
    for field in dataclasses.fields(Trajectory):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "images":
            assert len(x) == len(y)
            for p, q in zip(x, y, strict=True):
                assert q.dtype == np.uint8 and q.shape == p.shape and np.array_equal(p, q)
        elif field.name == "logprobs":
            bits = [np.array(v, dtype=np.float64).view(np.uint64) for v in (x, y)]
            assert np.array_equal(*bits), "log-probabilities must round-trip bit-exactly"
        else:
            assert x == y, field.name
    assert all(type(v) is float for v in b.logprobs)
    assert all(isinstance(s.model_span, tuple) for s in b.steps)


def test_save_then_load_round_trips_exactly(trajectories: list[Trajectory], tmp_path: Path) -> None:
    run_dir = save_trajectories([*trajectories, _hand_made()], tmp_path / "run", meta={"sampling": {"t": 1.0}})
    loaded = load_trajectories(run_dir)
    assert len(loaded) == len(trajectories) + 1
    for a, b in zip([*trajectories, _hand_made()], loaded, strict=True):
        _assert_same(a, b)
    pngs = list((run_dir / "images").glob("*.png"))
    total = sum(len(t.images) for t in loaded)
    assert len(pngs) < total, "the first image of a group is stored once"
    meta = load_meta(run_dir)
    assert meta["count"] == len(loaded) and meta["sampling"] == {"t": 1.0} and meta["distinct_images"] == len(pngs)
    assert meta["env_ids"] == ["visrl/Jigsaw-v1", "visrl/Made-v0", "visrl/SvgRender-v1"]
    assert load_trajectories(run_dir, limit=2)[1].member == 1
    assert "\\ud800" in (run_dir / "trajectories.jsonl").read_text(), "the file is ASCII JSON"
    assert write_viewer(run_dir).read_text().count('<section class="traj"') == len(loaded)
    save_trajectories(loaded[:1], run_dir)  # saving again replaces the run
    assert len(load_trajectories(run_dir)) == 1


def _edit_line(run_dir: Path, edit: Any) -> None:
    path = run_dir / "trajectories.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = json.dumps(edit(json.loads(lines[0])))
    path.write_text("\n".join(lines) + "\n")


def _first_png(run_dir: Path) -> Path:
    return run_dir / json.loads((run_dir / "trajectories.jsonl").read_text().splitlines()[0])["images"][0]["path"]


def _edit_png(run_dir: Path) -> None:
    from PIL import Image

    path = _first_png(run_dir)
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(path)


CORRUPTIONS = {
    "no jsonl": (lambda d: (d / "trajectories.jsonl").unlink(), "trajectories.jsonl"),
    "bad json": (lambda d: (d / "trajectories.jsonl").write_text('{"env_id": \n'), "trajectories.jsonl line 1"),
    "bad meta": (lambda d: (d / "meta.json").write_text("{nope"), "meta.json"),
    "missing field": (lambda d: _edit_line(d, lambda r: {k: v for k, v in r.items() if k != "mask"}), "'mask'"),
    "float id": (lambda d: _edit_line(d, lambda r: {**r, "prompt_ids": [1.5]}), "'prompt_ids'"),
    "path escape": (
        lambda d: _edit_line(d, lambda r: {**r, "images": [{"path": "../x.png", "shape": [1, 1]}]}),
        "'images'",
    ),
    "short mask": (lambda d: _edit_line(d, lambda r: {**r, "mask": r["mask"][:-1]}), "trajectory 0"),
    "bad step": (lambda d: _edit_line(d, lambda r: {**r, "steps": [{"action": 1}]}), "step 0"),
    "missing png": (lambda d: _first_png(d).unlink(), ".png"),
    "garbage png": (lambda d: _first_png(d).write_bytes(b"\x89PNG\r\n\x1a\nnot really"), ".png"),
    "edited png": (_edit_png, "do not match"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_missing_or_corrupt_file_is_a_clear_error(trajectories: list[Trajectory], tmp_path: Path, case: str) -> None:
    run_dir = save_trajectories(trajectories[:2], tmp_path / "run")
    corrupt, expected = CORRUPTIONS[case]
    corrupt(run_dir)
    with pytest.raises(ValueError) as err:
        load_trajectories(run_dir)
    assert isinstance(err.value, StoreError) and expected in str(err.value), str(err.value)


def test_bad_input_is_refused_when_saving(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such run directory"):
        load_trajectories(tmp_path / "nowhere")
    bad = _hand_made()
    bad.steps[0].info["pixels"] = np.zeros((2, 2))
    with pytest.raises(StoreError, match=r"steps\[0\]\.info\.pixels: a numpy array"):
        save_trajectories([bad], tmp_path / "a")
    bad = _hand_made()
    bad.images[0] = bad.images[0].astype(np.float32)
    with pytest.raises(StoreError, match="uint8"):
        save_trajectories([bad], tmp_path / "b")
    bad = _hand_made()
    bad.mask.pop()
    with pytest.raises(StoreError, match="trajectory 0"):
        save_trajectories([bad], tmp_path / "c")


def test_the_transcript_shows_every_turn(trajectories: list[Trajectory], tok: Any) -> None:
    traj = trajectories[2]
    text = transcript(traj)
    assert "visrl/Jigsaw-v1" in text and "seed 3" in text and "group 0 member 2" in text
    assert f"finish {traj.finish}" in text and "policy scripted" in text and "score" in text
    assert "[image 0: 84x84]" in text and "SYSTEM: You are a careful agent." in text
    assert text.count("--- turn") == len(traj.steps)
    for step in traj.steps:
        assert step.action in text
    assert "ACTION ERROR" in text, "the malformed tool call is flagged"
    assert "tokens:" not in text
    with_tokens = transcript(traj, tokenizer=tok)
    assert f"model {traj.model_tokens()}" in with_tokens and "model tokens [0:82] = the text + " in with_tokens
    broken = transcript(trajectories[-1])
    assert "ENV ERROR" in broken and "finish env_error" in broken
    steps_only = dataclasses.replace(_hand_made(), messages=[])
    text = transcript(steps_only)
    assert "[image 1: 7x5]" in text and "[image 2: 2x6]" in text and "cut at max_new_tokens" in text
    assert "reward 0.3 (a 0.3)" in text


def test_turns_pair_messages_with_steps(trajectories: list[Trajectory]) -> None:
    for traj in trajectories:
        listed = turns(traj.messages, traj.steps, traj.prompt_images)
        assert [t.step for t in listed] == traj.steps
        shown = [v for t in listed for kind, v in t.user if kind == "image"]
        assert shown == list(range(len(traj.images)))


def test_highlight_escapes_and_marks_blocks() -> None:
    out = highlight(HOSTILE_ACTION + "<answer>1 & 2</answer><answer>open")
    assert "<script" not in out and "<img" not in out and "&lt;script&gt;" in out
    assert '<span class="call">&lt;tool_call&gt;' in out and '<span class="answer">&lt;answer&gt;1 &amp; 2' in out
    assert out.endswith("&lt;answer&gt;open")


def test_the_cli_hook_writes_the_viewer_and_prints(
    trajectories: list[Trajectory], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = save_trajectories(trajectories, tmp_path / "run")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([str(run_dir), "--print", "2"])) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str((run_dir / "index.html").resolve())
    assert out.count("=== visrl/") == 2
    (run_dir / "trajectories.jsonl").unlink()
    assert run(parser.parse_args([str(run_dir)])) == 1
    assert "trajectories.jsonl" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
def test_the_viewer_in_chromium_shows_everything_and_runs_no_agent_code(
    trajectories: list[Trajectory], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    run_dir = save_trajectories(trajectories, tmp_path / "run dir")  # a space: file URLs are quoted
    page_path = write_viewer(run_dir)
    expected_turns = [len(turns(t.messages, t.steps, t.prompt_images)) for t in trajectories]
    expected_images = sum(
        kind == "image"
        for t in trajectories
        for turn in turns(t.messages, t.steps, t.prompt_images)
        for kind, _ in turn.user
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_load_state("load")
            assert page.locator("section.traj").count() == len(trajectories)
            assert page.locator("tbody tr").count() == len(trajectories)
            counts = page.eval_on_selector_all("section.traj", "s => s.map(e => e.querySelectorAll('.turn').length)")
            assert counts == expected_turns
            images = page.eval_on_selector_all("img", "i => i.map(e => [e.complete, e.naturalWidth])")
            assert len(images) == expected_images
            assert all(done and width > 0 for done, width in images), images
            assert page.evaluate("typeof window.pwned") == "undefined", "agent-written markup must not run"
            assert page.evaluate("document.scripts.length") == 1
            assert page.locator("img[src=x], img[src=y]").count() == 0
            text = page.inner_text("#t2")
            assert "<script>window.pwned=1</script>" in text and '<img src=x onerror="window.pwned=2">' in text
            assert page.locator("#t2 .call").count() >= 1 and page.locator("#t2 .err").count() >= 1
            assert page.locator("#t5 .err").first.inner_text().startswith("ENV ERROR: <img src=y")
            page.fill("#filter", "svgrender")
            assert page.locator("tbody tr:visible").count() == 3
            assert page.locator("section.traj:visible").count() == 3
            assert page.inner_text("#shown") == "3 shown"
            page.fill("#filter", "error")
            assert page.locator("tbody tr:visible").count() == 2
            page.fill("#filter", "")
            assert page.locator("section.traj:visible").count() == len(trajectories)
            assert not errors, errors
            # the page's Content-Security-Policy lets only its own script run, even if markup slipped through
            page_path.write_text(page_path.read_text().replace("<h1>", HOSTILE + "<h1>", 1))
            page.reload()
            assert page.locator("img[src=x]").count() == 1
            assert page.evaluate("typeof window.pwned") == "undefined"
            page.fill("#filter", "jigsaw")
            assert page.inner_text("#shown") == "3 shown", "the viewer's own script still runs"
        finally:
            browser.close()
