"""visrl_envs.wrappers on the registered envs: Gymnasium's and SB3's checkers, observation values
against the unwrapped env, vector envs, a CleanRL-style CNN and SB3's CnnPolicy, and the errors."""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

from tests.conftest import ENV_IDS
from visrl_envs.registry import entry
from visrl_envs.wrappers import ChannelFirst, FrameStack, ImageBudget, ResizeImages, SingleImage

Factory = Callable[[gym.Env], gym.Env]


def ids_with(interface: str) -> list[str]:
    return [env_id for env_id in ENV_IDS if interface in entry(env_id).interfaces]


def image_keys(space: gym.spaces.Dict) -> tuple[str, ...]:
    return tuple(k for k, s in space.spaces.items() if isinstance(s, gym.spaces.Box) and len(s.shape) == 3)


def single_image(env: gym.Env) -> gym.Env:
    """SingleImage as a script would use it: the one image, or all of them stacked (SvgRender)."""
    keys = image_keys(env.observation_space)
    return SingleImage(env) if len(keys) == 1 else SingleImage(env, keys=keys)


#: name -> (how to wrap, the interfaces it serves)
WRAPPERS: dict[str, tuple[Factory, tuple[str, ...]]] = {
    "SingleImage": (single_image, ("numeric",)),
    "ChannelFirst": (ChannelFirst, ("numeric",)),
    "SingleImage+ChannelFirst": (lambda e: ChannelFirst(single_image(e)), ("numeric",)),
    "ResizeImages": (lambda e: ResizeImages(e, (48, 40)), ("numeric", "text")),
    "FrameStack": (lambda e: FrameStack(e, 3), ("numeric",)),
    "ImageBudget": (lambda e: ImageBudget(e, 2), ("text",)),
}
CASES = [
    pytest.param(name, env_id, mode, id=f"{name}-{env_id.split('/')[-1]}-{mode}")
    for name, (_, modes) in WRAPPERS.items()
    for mode in modes
    for env_id in ids_with(mode)
]
#: Make kwargs of the value checks: Jigsaw-v0 at difficulty 0 is solved by any swap (one-step
#: episodes); at difficulty 1 its episodes run for several turns, so histories build up.
VALUE_KWARGS: dict[str, dict[str, Any]] = {"visrl/Jigsaw-v1": {"difficulty": 1}}


@contextmanager
def strict_warnings() -> Iterator[None]:
    """Every warning is an error, except one: ``check_env`` warns on every wrapped env that it "is
    different from the unwrapped version" and suggests checking ``env.unwrapped``. A wrapper can only
    be checked wrapped (``env.unwrapped`` would skip it), so that advisory is expected and allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=r".*is different from the unwrapped version")
        yield


class Recorder(gym.Wrapper):
    """Sits under the wrapper under test and keeps a copy of the last observation the env gave."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.last: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.last = copy.deepcopy(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, *rest = self.env.step(action)
        self.last = copy.deepcopy(obs)
        return (obs, *rest)  # type: ignore[return-value]


def make_recorded(env_id: str, mode: str, wrap: Factory) -> gym.Env:
    return wrap(Recorder(gym.make(env_id, action_mode=mode, **VALUE_KWARGS.get(env_id, {}))))


def rollout(env: gym.Env, steps: int = 10, seed: int = 0) -> Iterator[tuple[Any, Any, bool]]:
    """``(wrapped obs, unwrapped obs, is_reset)`` for a reset and ``steps`` random valid actions,
    resetting when an episode ends; checks every wrapped observation is in the wrapper's space."""
    base = env.unwrapped
    recorder = env
    while not isinstance(recorder, Recorder):
        recorder = recorder.env
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    yield obs, recorder.last, True
    for _ in range(steps):
        action = base.sample_text_action(rng) if base.action_mode == "text" else base.sample_numeric_action(rng)
        obs, _, terminated, truncated, _ = env.step(action)
        assert env.observation_space.contains(obs)
        yield obs, recorder.last, False
        if terminated or truncated:
            obs, _ = env.reset()
            assert env.observation_space.contains(obs)
            yield obs, recorder.last, True


def arrays_of(obs: Any) -> list[np.ndarray]:
    """The arrays of an observation: a Box's, a numeric Dict's values, a text observation's images."""
    if isinstance(obs, np.ndarray):
        return [obs]
    out: list[np.ndarray] = []
    for value in obs.values():
        out += [value] if isinstance(value, np.ndarray) else [v for v in value if isinstance(v, np.ndarray)]
    return out


# -- Gymnasium's checker -------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "env_id", "mode"), CASES)
def test_gymnasium_check_env_strict(name: str, env_id: str, mode: str) -> None:
    # check_env also rebuilds the wrapped env from env.spec for each render mode: the wrappers
    # record their constructor arguments, so the spec names them and make() re-applies them.
    env = WRAPPERS[name][0](gym.make(env_id, action_mode=mode, render_mode="rgb_array"))
    with strict_warnings():
        check_env(env)
    env.close()


# -- values against the unwrapped env ------------------------------------------------------------
@pytest.mark.parametrize("env_id", ids_with("numeric"))
def test_single_image_is_the_dict_entry(env_id: str) -> None:
    env = make_recorded(env_id, "numeric", single_image)
    keys = image_keys(env.env.observation_space)
    h, w, _ = env.env.observation_space[keys[0]].shape
    assert env.observation_space.shape == (h, w, 3 * len(keys)) and env.observation_space.dtype == np.uint8
    for obs, raw, _ in rollout(env):
        np.testing.assert_array_equal(obs, np.concatenate([raw[k] for k in keys], axis=-1))
    env.close()


def test_single_image_key_picks_one_of_several() -> None:
    env = make_recorded("visrl/SvgRender-v1", "numeric", lambda e: SingleImage(e, "canvas"))
    assert env.observation_space == env.env.observation_space["canvas"]
    for obs, raw, _ in rollout(env, steps=3):
        np.testing.assert_array_equal(obs, raw["canvas"])
    env.close()


@pytest.mark.parametrize("env_id", ids_with("numeric"))
def test_channel_first_is_a_transpose(env_id: str) -> None:
    env = make_recorded(env_id, "numeric", ChannelFirst)
    keys = image_keys(env.env.observation_space)
    for key, space in env.env.observation_space.spaces.items():
        expected = (space.shape[2], *space.shape[:2]) if key in keys else space.shape
        assert env.observation_space[key].shape == expected
    for obs, raw, _ in rollout(env):
        assert obs.keys() == raw.keys()
        for key in raw:
            np.testing.assert_array_equal(obs[key], raw[key].transpose(2, 0, 1) if key in keys else raw[key])
    env.close()


def resized_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the wrapper should give for a shrink: PIL's BOX filter on the RGB image."""
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BOX))


@pytest.mark.parametrize("mode", ["numeric", "text"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_resize_images_values(env_id: str, mode: str) -> None:
    if mode not in entry(env_id).interfaces:
        pytest.skip(f"{env_id} has no {mode} interface")
    size = (48, 40)
    env = make_recorded(env_id, mode, lambda e: ResizeImages(e, size))
    for obs, raw, _ in rollout(env):
        if mode == "text":
            assert obs["text"] == raw["text"]  # the prompt is left as the env wrote it
            assert len(obs["images"]) == len(raw["images"])
            pairs = list(zip(obs["images"], raw["images"], strict=True))
        else:
            keys = image_keys(env.env.observation_space)
            pairs = [(obs[k], raw[k]) for k in keys]
            for k in raw.keys() - set(keys):
                np.testing.assert_array_equal(obs[k], raw[k])
        for resized, original in pairs:
            assert resized.shape == (*size, 3) and resized.dtype == np.uint8
            np.testing.assert_array_equal(resized, resized_reference(original, size))
    env.close()


@pytest.mark.parametrize("size", [48, (30, 400), 400], ids=["shrink", "mixed", "grow"])
@pytest.mark.parametrize("mode", ["numeric", "text"])
def test_resize_images_keeps_a_constant_image_constant(mode: str, size: int | tuple[int, int]) -> None:
    env = ResizeImages(gym.make("visrl/SvgRender-v1", action_mode=mode), size)
    hw = (size, size) if isinstance(size, int) else size
    color = np.array([7, 130, 255], dtype=np.uint8)
    raw, _ = env.env.reset(seed=0)
    if mode == "text":
        raw = {**raw, "images": tuple(np.broadcast_to(color, im.shape).copy() for im in raw["images"])}
        images = env.observation(raw)["images"]
        assert env.observation_space["images"].frame == (*hw, 3)
    else:
        raw = {k: np.broadcast_to(color, v.shape).copy() if v.ndim == 3 else v for k, v in raw.items()}
        images = tuple(v for v in env.observation(raw).values() if v.ndim == 3)
        assert all(s.shape == (*hw, 3) for s in env.observation_space.spaces.values() if len(s.shape) == 3)
    assert images
    for image in images:
        assert image.shape == (*hw, 3)
        assert (image == color).all()
    env.close()


@pytest.mark.parametrize("env_id", ids_with("numeric"))
def test_frame_stack_holds_the_last_k_observations(env_id: str) -> None:
    k = 3
    env = make_recorded(env_id, "numeric", lambda e: FrameStack(e, k))
    inner = env.env.observation_space
    for key, space in inner.spaces.items():
        assert env.observation_space[key].shape == (*space.shape[:-1], k * space.shape[-1])
    history: list[dict[str, np.ndarray]] = []
    for obs, raw, is_reset in rollout(env, steps=12):
        history = [raw] * k if is_reset else [*history[1:], raw]
        for key, space in inner.spaces.items():
            c = space.shape[-1]
            slices = [obs[key][..., j * c : (j + 1) * c] for j in range(k)]
            np.testing.assert_array_equal(slices[-1], raw[key])  # the newest is the last slice
            if is_reset:  # after reset every slot holds the first observation
                for s in slices:
                    np.testing.assert_array_equal(s, raw[key])
            for s, old in zip(slices, history, strict=True):  # oldest first
                np.testing.assert_array_equal(s, old[key])
    env.close()


def test_frame_stack_zero_padding() -> None:
    env = FrameStack(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), 4, padding_type="zero")
    obs, _ = env.reset(seed=0)
    raw = obs["image"][..., 9:]
    assert not obs["image"][..., :9].any() and raw.any()
    env.close()


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("env_id", ids_with("text"))
def test_image_budget_keeps_the_last_k_images(env_id: str, k: int) -> None:
    env = make_recorded(env_id, "text", lambda e: ImageBudget(e, k))
    assert env.observation_space["images"].max_images == k
    assert env.observation_space["images"].frame == env.env.observation_space["images"].frame
    episode: list[np.ndarray] = []  # a manual record of the env's own new images, this episode
    notes = 0
    for obs, raw, is_reset in rollout(env, steps=15):
        new = list(raw["images"])
        episode = new if is_reset else [*episode, *new]
        expected = episode[-k:]
        assert len(obs["images"]) == len(expected)
        for got, want in zip(obs["images"], expected, strict=True):
            np.testing.assert_array_equal(got, want)
        earlier = len(expected) - min(len(new), k)
        dropped = len(episode) - len(expected)
        if earlier or dropped:
            notes += 1
            first, rest = obs["text"].split("\n", 1)
            assert first.startswith(f"Images: the last {len(expected)} of this episode, oldest first (")
            assert (f"{earlier} from earlier turns" in first) == bool(earlier)
            assert (f"{dropped} older not shown" in first) == bool(dropped)
            assert rest == raw["text"]
        else:
            assert obs["text"] == raw["text"]
    assert notes > 0  # the rollout did exercise the history
    env.close()


def test_image_budget_observations_share_no_arrays() -> None:
    env = ImageBudget(gym.make("visrl/SvgRender-v1"), 3)
    first, _ = env.reset(seed=0)
    second, *_ = env.step(env.unwrapped.sample_text_action(np.random.default_rng(0)))
    assert len(second["images"]) == 2
    assert not np.shares_memory(first["images"][0], second["images"][0])
    env.close()


# -- composition, pickling -----------------------------------------------------------------------
def test_chain_single_image_frame_stack_resize_channel_first() -> None:
    env = make_recorded(
        "visrl/Jigsaw-v1", "numeric", lambda e: ChannelFirst(ResizeImages(FrameStack(SingleImage(e), 3), 32))
    )
    assert env.observation_space.shape == (9, 32, 32)
    for obs, raw, _ in rollout(env, steps=4):
        # 9 channels are resized one by one; the newest three equal the RGB resize of the env's image
        np.testing.assert_array_equal(obs[6:].transpose(1, 2, 0), resized_reference(raw["image"], (32, 32)))
    env.close()


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_wrapped_envs_pickle(name: str) -> None:
    # Pickled mid-episode and stepped, as tests/test_conformance.py does for the bare envs: the clone
    # carries the wrapper's state (FrameStack's queue, ImageBudget's images) and continues alike.
    wrap, modes = WRAPPERS[name]
    env = wrap(gym.make("visrl/Jigsaw-v1", action_mode=modes[0], difficulty=1))
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.observation_space == env.observation_space
    base = env.unwrapped
    action = base.sample_text_action(np.random.default_rng(0)) if modes[0] == "text" else 0
    ours, theirs = env.step(action)[0], clone.step(action)[0]
    assert clone.observation_space.contains(theirs)
    assert len(arrays_of(ours)) == len(arrays_of(theirs)) > 0
    for a, b in zip(arrays_of(ours), arrays_of(theirs), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not isinstance(ours, dict) or ours.get("text") == theirs.get("text")
    env.close()
    clone.close()


# -- vector envs, CleanRL, SB3 -------------------------------------------------------------------
@pytest.mark.parametrize("channel_first", [False, True], ids=["hwc", "chw"])
@pytest.mark.parametrize("env_id", ids_with("numeric"))
def test_make_vec_async(env_id: str, channel_first: bool) -> None:
    wrappers: list[Factory] = [single_image, ChannelFirst] if channel_first else [single_image]
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="async", wrappers=wrappers, action_mode="numeric")
    try:
        inner = gym.make(env_id, action_mode="numeric").observation_space
        keys = image_keys(inner)
        h, w, _ = inner[keys[0]].shape
        c = 3 * len(keys)
        assert envs.single_observation_space.shape == ((c, h, w) if channel_first else (h, w, c))
        obs, _ = envs.reset(seed=0)
        for _ in range(3):
            assert obs.shape == (2, *envs.single_observation_space.shape) and obs.dtype == np.uint8
            assert envs.observation_space.contains(obs)
            obs, *_ = envs.step(envs.action_space.sample())
    finally:
        envs.close()


def test_cleanrl_style_cnn_runs_unchanged() -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)

    def make_env() -> Callable[[], gym.Env]:  # CleanRL's thunk
        def thunk() -> gym.Env:
            env = gym.make("visrl/Jigsaw-v1", action_mode="numeric")
            env = gym.wrappers.RecordEpisodeStatistics(env)
            return ChannelFirst(SingleImage(env))

        return thunk

    envs = gym.vector.SyncVectorEnv([make_env() for _ in range(2)])
    assert envs.single_observation_space.shape == (3, 84, 84)
    assert isinstance(envs.single_action_space, gym.spaces.Discrete)
    nn = torch.nn
    network = nn.Sequential(  # CleanRL ppo_atari's trunk, sized from the space
        nn.Conv2d(envs.single_observation_space.shape[0], 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
    )
    obs, _ = envs.reset(seed=0)
    with torch.no_grad():
        assert network(torch.Tensor(obs) / 255.0).shape == (2, 512)
    envs.close()


SB3_STACKS: dict[str, Callable[[], gym.Env]] = {
    "SingleImage": lambda: SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="numeric")),
    "SingleImage+ChannelFirst": lambda: ChannelFirst(SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="numeric"))),
    "SingleImage+FrameStack": lambda: FrameStack(
        SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="numeric", difficulty=1)), 4
    ),
}


@pytest.mark.parametrize("stack", list(SB3_STACKS))
def test_sb3_check_env_and_cnn_policy(stack: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    make = SB3_STACKS[stack]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(make(), warn=True)
        venv = DummyVecEnv([make])
        model = PPO("CnnPolicy", venv, n_steps=32, batch_size=32, device="cpu", seed=0)
        model.learn(64)
    assert model.num_timesteps == 64
    venv.close()


# -- errors --------------------------------------------------------------------------------------
def test_single_image_refuses_the_text_interface() -> None:
    with pytest.raises(ValueError, match=r"numeric interface.*action_mode='numeric'"):
        SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="text"))


def test_single_image_key_errors() -> None:
    with pytest.raises(ValueError, match=r"'nope' is not an image of the observation; its images are \['image'\]"):
        SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), key="nope")
    with pytest.raises(ValueError, match=r"'query' is not an image"):
        SingleImage(gym.make("visrl/JigsawPair-v1", action_mode="numeric"), key="query")
    with pytest.raises(ValueError, match=r"2 images \['canvas', 'target'\].*key="):
        SingleImage(gym.make("visrl/SvgRender-v1", action_mode="numeric"))
    with pytest.raises(ValueError, match="not both"):
        SingleImage(gym.make("visrl/SvgRender-v1", action_mode="numeric"), "canvas", keys=("target",))


@pytest.mark.parametrize("k", [0, -1, 65, 1.5, True])
def test_image_budget_k_errors(k: Any) -> None:
    with pytest.raises(ValueError, match="k must be"):
        ImageBudget(gym.make("visrl/Jigsaw-v1"), k)


@pytest.mark.parametrize("size", [0, -3, (0, 10), (10, -1), (10,), (1.5, 2), "84"])
def test_resize_images_size_errors(size: Any) -> None:
    with pytest.raises(ValueError, match="size must be"):
        ResizeImages(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), size)


def test_interface_mismatches_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="ImageBudget works on the text interface"):
        ImageBudget(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), 2)
    with pytest.raises(ValueError, match=r"FrameStack works on the numeric interface.*ImageBudget"):
        FrameStack(gym.make("visrl/Jigsaw-v1"), 2)
    with pytest.raises(ValueError, match="ChannelFirst works on the numeric interface"):
        ChannelFirst(gym.make("visrl/Jigsaw-v1"))
    with pytest.raises(ValueError, match="k must be"):
        FrameStack(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), 0)
