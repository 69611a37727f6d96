"""Contract v3, proved on small unregistered envs (tests/toy_envs.py): each runs through the whole
contract library, and each new capability is checked where it matters."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from tests import toy_envs
from tests.helpers import process_alive
from visrl_envs.core import EnvContractError, VisualEnv
from visrl_envs.core.backend import shared_parent_running
from visrl_envs.core.numeric import validate_numeric
from visrl_envs.core.prompt import IMAGE_MARKER, split_at_markers
from visrl_envs.core.tools import AnswerFormat, ToolSet
from visrl_envs.testing import (
    CHECKS,
    ContractSkip,
    ContractViolation,
    EnvUnderTest,
    cases,
    check_env_contract,
    malformed_numeric_actions,
    malformed_text_actions,
)

TOYS = {
    "tally": toy_envs.TallyEnv,
    "zoom": toy_envs.ZoomToyEnv,
    "nudge": toy_envs.NudgeEnv,
    "bars": toy_envs.BarsRenderEnv,
}
SUBJECTS = {name: EnvUnderTest.of(cls) for name, cls in TOYS.items()}
CASES = [
    pytest.param(name, check, mode, id=f"{name}-{check.name}-{mode}")
    for name, subject in SUBJECTS.items()
    for check, mode in cases(subject)
]


@pytest.mark.parametrize(("name", "check", "mode"), CASES)
def test_every_toy_passes_the_whole_contract(name: str, check: Any, mode: str) -> None:
    try:
        check.run(SUBJECTS[name], mode)
    except ContractSkip as reason:
        pytest.skip(str(reason))


# -- stateful backends ------------------------------------------------------------------------------
def _play(env: gym.Env, amounts: list[int]) -> list[int]:
    totals = []
    for amount in amounts:
        info = env.step(f'<tool_call>{{"name": "add", "arguments": {{"amount": {amount}}}}}</tool_call>')[-1]
        assert info["env_error"] is None and info["action_error"] is None, info
        totals.append(env.unwrapped.total)
    return totals


def test_a_killed_session_is_rebuilt_and_the_episode_replayed_onto_it() -> None:
    env = toy_envs.TallyEnv()
    env.reset(options={"task_seed": 1, "target": 20})
    _play(env, [3, 4])
    handle = env.backends["tally"]
    assert handle.kill() and handle.generation == 1
    assert _play(env, [5]) == [12], "the retry ran on a fresh session holding the replayed 3 + 4"
    assert handle.generation == 2 and handle.get().total() == 12
    env.close()


def test_a_killed_parent_takes_every_sibling_and_each_restores_its_own() -> None:
    a, b = toy_envs.TallyEnv(), toy_envs.TallyEnv()
    a.reset(options={"task_seed": 1, "target": 20})
    b.reset(options={"task_seed": 2, "target": 20})
    _play(a, [2])
    _play(b, [5])
    server = a.backends["tally"].get().server
    assert b.backends["tally"].get().server is server, "one server per process"
    a.backends["tally"].kill(scope="parent")
    assert not process_alive(server.proc.pid)
    assert _play(a, [1]) == [3] and _play(b, [1]) == [6]
    assert a.backends["tally"].get().server is b.backends["tally"].get().server is not server
    pid = a.backends["tally"].get().server.proc.pid
    a.close()
    assert process_alive(pid), "the sibling still holds the parent"
    b.close()
    assert not process_alive(pid) and not shared_parent_running("tests-tally-server")


def test_a_discarded_child_leaves_its_sibling_untouched() -> None:
    a, b = toy_envs.TallyEnv(), toy_envs.TallyEnv()
    a.reset(options={"task_seed": 1, "target": 20})
    b.reset(options={"task_seed": 2, "target": 20})
    _play(a, [2])
    _play(b, [4])
    session_b = b.backends["tally"].get()
    a.backends["tally"].discard()
    assert b.backends["tally"].get() is session_b and b.backends["tally"].generation == 1
    assert _play(a, [1]) == [3] and _play(b, [1]) == [5]
    a.close()
    b.close()


def test_an_env_pickled_mid_episode_restores_its_backend_in_the_clone() -> None:
    env = toy_envs.TallyEnv(action_mode="numeric")
    env.reset(options={"task_seed": 3, "target": 20})
    env.step(2)
    env.step(3)  # total 3 + 4
    clone = pickle.loads(pickle.dumps(env))
    assert clone.backends["tally"].generation == 0
    obs = clone.step(0)[0]  # the clone's first backend use rebuilds and replays
    assert clone.total == 8 and clone.backends["tally"].get().total() == 8
    assert np.array_equal(obs["image"], env.step(0)[0]["image"])
    env.close()
    clone.close()


def test_without_restoring_the_contract_library_catches_the_lost_state() -> None:
    """The rebuild check is not vacuous: the same env without stateful=True fails it."""

    class Forgetful(toy_envs.TallyEnv):
        def _backend_acquired(self, name: str, backend: Any) -> None:
            return None  # never restores

    report = check_env_contract(Forgetful, checks=["backend_rebuild_is_invisible"], raise_on_failure=False)
    assert not report.ok and "changed the trajectory" in report.failures[0].message
    with pytest.raises(ContractViolation, match="backend_rebuild_is_invisible"):
        check_env_contract(Forgetful, checks=["backend_rebuild_is_invisible"], interfaces=["numeric"])


def test_no_backend_process_outlives_close_also_in_async_workers() -> None:
    before = set(toy_envs.TallyServer.pids)
    envs = gym.vector.AsyncVectorEnv([toy_envs.TallyEnv] * 2)
    envs.reset(seed=0)
    envs.step(("<answer>x</answer>", '<tool_call>{"name": "add", "arguments": {"amount": 2}}</tool_call>'))
    workers = [p.pid for p in envs.processes]
    children = {int(pid) for w in workers for pid in Path(f"/proc/{w}/task/{w}/children").read_text().split()}
    assert len(children) == 2, "each worker started its own server"
    envs.close()
    assert not any(process_alive(pid) for pid in children)
    assert set(toy_envs.TallyServer.pids) == before, "the parent process started none"


# -- reset options --------------------------------------------------------------------------------
def test_reset_options_are_declared_checked_and_replayed() -> None:
    env = toy_envs.TallyEnv()
    _, info = env.reset(seed=0, options={"target": 7})
    assert env.target == 7 and env.episode_options == {"target": 7}
    with pytest.raises(ValueError, match=r"'target' is an integer in 5\.\.20, got 30"):
        env.reset(options={"target": 30})
    with pytest.raises(
        ValueError, match=r"unknown reset options \['targte'\]; TallyEnv takes 'task_seed' and 'target'"
    ):
        env.reset(options={"targte": 7})
    env.reset(seed=1)
    assert env.target != 7 or env.episode_options == {}
    env.close()


# -- images of several sizes ------------------------------------------------------------------------
def _zoom(box: list[int], image: int = 1) -> str:
    return f'<tool_call>{{"name": "zoom", "arguments": {{"bbox_2d": {box}, "image": {image}}}}}</tool_call>'


def test_three_image_sizes_in_one_episode_with_captions_and_markers() -> None:
    env = toy_envs.ZoomToyEnv()
    obs, info = env.reset(seed=0)
    assert [im.shape for im in obs["images"]] == [(240, 320, 3), (60, 80, 3)]
    spec = info["prompt_spec"]
    assert not spec.fixed_frame and [(n.width, n.height) for n in spec.images] == [(320, 240), (80, 60)]
    assert obs["text"].startswith("Image 1 (320x240 px): the scene\n<image>\nImage 2 (80x60 px): a thumbnail")
    assert "Images are at most 320x240 px; each image's size is given with it." in obs["text"]
    obs = env.step(_zoom([10, 20, 110, 70]))[0]
    assert [im.shape for im in obs["images"]] == [(50, 100, 3)]
    assert obs["text"].startswith("Image 3 (100x50 px): zoom of image 1, box [10, 20, 110, 70]\n<image>\n")
    pieces = split_at_markers(obs["text"], 1)
    assert pieces is not None and len(pieces) == 2
    obs = env.step(_zoom([0, 0, 40, 30], image=3))[0]  # a zoom into the crop: a fourth size
    assert obs["images"][0].shape == (30, 40, 3) and obs["text"].startswith("Image 4 (40x30 px)")
    env.close()


def test_box_constraints_are_checked_by_the_tool_table() -> None:
    env = toy_envs.ZoomToyEnv()
    env.reset(seed=0)
    cases_ = {
        _zoom([100, 10, 20, 30]): "bbox_2d of zoom must have x1 < x2 and y1 < y2, got [100, 10, 20, 30]",
        _zoom([0, 0, 90, 50], image=2): "bbox_2d of zoom must lie inside image 2 (80x60 px",
        _zoom([0, 0, 10, 10], image=5): "there is no image 5; this episode has shown images 1 to 2",
        _zoom([0, 0, 321, 10]): "item 2 of argument 'bbox_2d' of zoom must be in [0, 320], got 321",
    }
    for action, message in cases_.items():
        obs, reward, _, _, info = env.step(action)
        assert info["action_error"] is not None and message in info["action_error"], info["action_error"]
        assert obs["images"] == () and reward == env.format_penalty
    spec = env.prompt_spec()
    zoom = spec.tools[0]["function"]
    assert zoom["parameters"]["examples"] == [{"bbox_2d": [0, 0, 160, 120], "image": 1}]
    assert "x1 < x2 and y1 < y2" in zoom["description"] and "lies inside the image image names" in zoom["description"]
    assert '{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 160, 120], "image": 1}}' in env.reset(seed=0)[0]["text"]
    env.close()


def test_images_of_three_sizes_survive_async_shared_memory() -> None:
    envs = gym.vector.AsyncVectorEnv([toy_envs.ZoomToyEnv] * 2)
    sync = gym.vector.SyncVectorEnv([toy_envs.ZoomToyEnv] * 2)
    a, _ = envs.reset(seed=[4, 5])
    b, _ = sync.reset(seed=[4, 5])
    for images_a, images_b in zip(a["images"], b["images"], strict=True):
        assert [im.shape for im in images_a] == [(240, 320, 3), (60, 80, 3)]
        assert all(np.array_equal(x, y) for x, y in zip(images_a, images_b, strict=True))
    actions = (_zoom([5, 5, 77, 33]), _zoom([0, 0, 20, 10], image=2))
    a, *_ = envs.step(actions)
    b, *_ = sync.step(actions)
    assert [im.shape for im in a["images"][0]] == [(28, 72, 3)] and [im.shape for im in a["images"][1]] == [(10, 20, 3)]
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a["images"], b["images"], strict=True))
    assert list(a["text"]) == list(b["text"])
    envs.close()
    sync.close()


class _Sloppy(VisualEnv):
    """Shows what it should not: for the show() checks."""

    family = "toy"
    horizon = 1

    def __init__(self, image: Any = None, count: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tools = ToolSet(answer=AnswerFormat("choice", "a", options=("A",)))
        self.image, self.count = image, count
        box = spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self._set_spaces((64, 64, 3), spaces.Dict({"image": box}), spaces.Discrete(1))

    def _new_task(self, rng: np.random.Generator) -> None:
        for _ in range(self.count):
            self.show(self.image)

    _task_text = _render_frame = _numeric_observation = _score = _apply = lambda self, *a: None  # type: ignore[assignment]
    null_text = oracle_text = oracle_numeric = lambda self: None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("image", "count", "message"),
    [
        (np.zeros((64, 64, 3), np.uint8), 2, "shows image 2 in one turn but declared at most 1"),
        (np.zeros((64, 64, 3), np.float32), 1, "takes uint8 (H, W, 3) images, got float32"),
        (np.zeros((32, 64, 3), np.uint8), 1, "got a 64x32 image; its frame is 64x64"),
        (np.zeros((64, 64), np.uint8), 1, "got uint8 (64, 64)"),
    ],
)
def test_show_checks_what_it_is_given_where_it_is_called(image: Any, count: int, message: str) -> None:
    env = _Sloppy(image, count)
    with pytest.raises(EnvContractError, match=re.escape(message)):
        env.reset(seed=0)


def test_declaring_too_many_images_fails_at_construction() -> None:
    class Greedy(_Sloppy):
        max_images_per_turn = 9

    with pytest.raises(EnvContractError, match="declares 9 images per turn; a text turn shows 1 to 8"):
        Greedy()


def test_stray_markers_in_env_text_are_escaped() -> None:
    env = toy_envs.ZoomToyEnv()
    env.reset(seed=0)
    obs = env.step("<image> hello")[0]
    assert IMAGE_MARKER not in obs["text"] and "(image)" in obs["text"]
    env.close()


# -- non-square rendering feedback with extras ------------------------------------------------------
def test_render_feedback_on_a_non_square_frame_with_extras_and_an_extra_term() -> None:
    env = toy_envs.BarsRenderEnv()
    obs, _ = env.reset(seed=0)
    assert obs["images"][0].shape == (96, 160, 3) and env.frame_size == (160, 96) and env.size == (160, 96)
    assert "160x96 px" in obs["text"]
    wrong_count = "bars " + " ".join(["1"] * (env.target_bars + 1))
    _, reward, _, _, info = env.step(f"<answer>{wrong_count}</answer>")
    assert info["render_extras"] == {"bars": env.target_bars + 1} and info["reward_terms"]["count"] == 0.0
    obs, reward, terminated, _, info = env.step(env.oracle_text())
    assert info["reward_terms"]["count"] == pytest.approx(0.2) and terminated and info["success"]
    assert f"Your program drew {env.target_bars} bars." in obs["text"]
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    env.close()


def test_raster_targets_are_letterboxed_into_a_non_square_frame(tmp_path: Any) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "square.png")
    env = toy_envs.BarsRenderEnv(targets=tmp_path)
    env.reset(seed=0)
    assert env.target is not None and env.target.shape == (96, 160, 3)
    assert (env.target[:, :20] == 255).all() and (env.target[:, 40:120] == 0).all(), "black square centred on white"
    with pytest.raises(ValueError, match=r"size\[1\] \(height\)"):
        toy_envs.BarsRenderEnv(size=(160, 10))
    env.close()


# -- the derived hostile corpora ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "space",
    [
        spaces.Discrete(4, start=2),
        spaces.MultiDiscrete([3, 5, 2]),
        spaces.Box(-1.0, 1.0, (3,), dtype=np.float32),
        spaces.Box(0, 255, (2, 2, 3), dtype=np.uint8),
        spaces.Box(np.array([0.0, -np.inf]), np.array([1.0, np.inf]), dtype=np.float64),
    ],
    ids=str,
)
def test_malformed_numeric_actions_are_outside_their_space(space: spaces.Space) -> None:
    from visrl_envs.core.errors import ActionError

    derived = malformed_numeric_actions(space)
    assert len(derived) >= 7
    for what, action in derived:
        with pytest.raises(ActionError):
            validate_numeric(space, action)
        assert what


def test_the_text_corpus_knows_free_text_answers() -> None:
    free = ToolSet(answer=AnswerFormat("text", "anything"))
    choice = ToolSet(answer=AnswerFormat("choice", "a letter", options=("A", "B")))
    by_text = {h.text: h.must_fail for h in malformed_text_actions(free)}
    assert by_text["<answer>%%%</answer>"] is False and by_text["<tool_call>not json</tool_call>"] is True
    assert {h.text: h.must_fail for h in malformed_text_actions(choice)}["<answer>%%%</answer>"] is True
    zoom = toy_envs.ZoomToyEnv().tools
    texts = [h.text for h in malformed_text_actions(zoom) if h.must_fail]
    assert any('"name": "zoom"' in t and '"bbox_2d": [0, 0, 0, 0, 0]' in t for t in texts), "wrong list lengths"


def test_every_check_is_listed_once_with_a_doc() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names)) and all(c.doc for c in CHECKS)
    numeric_only = EnvUnderTest.of(toy_envs.NudgeEnv, interfaces=["numeric"])
    assert all(mode == "numeric" for _, mode in cases(numeric_only))
