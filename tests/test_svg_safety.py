"""Hostile SVG (DESIGN.md section 4): each attempt ends as an action or env error within the timeout,
reads nothing, fetches nothing, and leaves the env usable."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from tests.helpers import process_alive

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
CANARY_RGB = (17, 203, 97)


@pytest.fixture(scope="module")
def canary_server() -> Iterator[tuple[int, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()


@pytest.fixture(scope="module")
def canary_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("canary") / "canary.png"
    Image.new("RGB", (64, 64), CANARY_RGB).save(path)
    return path


@pytest.fixture(scope="module")
def env() -> Iterator[gym.Env]:
    e = gym.make("visrl/SvgRender-v1", size=64)
    e.reset(seed=0)
    yield e
    e.close()


def _svg(body: str, attrs: str = 'viewBox="0 0 256 256"') -> str:
    return f"<svg {NS} {attrs}>{body}</svg>"


def hostile_inputs(port: int, canary: Path) -> dict[str, str]:
    nested = "<g>" * 5000 + "</g>" * 5000
    uses = '<g id="l0"><rect width="1" height="1"/></g>' + "".join(
        f'<g id="l{i}">' + f'<use href="#l{i - 1}"/>' * 10 + "</g>" for i in range(1, 8)
    )
    laughs = (
        '<!DOCTYPE svg [<!ENTITY a "ha">'
        + "".join(f'<!ENTITY a{i} "{("&a" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 9))
        + "]>"
    )
    return {
        "file_url": _svg(f'<image href="file://{canary}" width="256" height="256"/>'),
        "file_url_uppercase": _svg(f'<image xlink:href="FILE://{canary}" width="256" height="256"/>'),
        "absolute_path": _svg(f'<image href="{canary}" width="256" height="256"/>'),
        "relative_path": _svg('<image href="canary.png" width="256" height="256"/>'),
        "http_image": _svg(f'<image href="http://127.0.0.1:{port}/image.png" width="256" height="256"/>'),
        "css_url": _svg(f'<rect width="256" height="256" style="fill: url(http://127.0.0.1:{port}/fill)"/>'),
        "css_import": _svg(
            f"<style>@import url(http://127.0.0.1:{port}/style.css);</style><rect width='9' height='9'/>"
        ),
        "external_use": _svg(f'<use href="http://127.0.0.1:{port}/sprite.svg#x"/>'),
        "xxe": f'<!DOCTYPE svg [<!ENTITY x SYSTEM "file://{canary}">]>' + _svg("<text>&x;</text>"),
        "billion_laughs": laughs + _svg("<text>&a8;</text>"),
        "huge_size": _svg('<rect width="100" height="100"/>', 'width="100000000" height="100000000"'),
        "deep_nesting": _svg(nested),
        "use_bomb": _svg(uses + '<use href="#l7"/>'),
        "use_cycle": _svg('<g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g>'),
        "use_chain": _svg(
            "".join(f'<g id="u{i}"><use href="#u{i + 1}"/></g>' for i in range(4000)) + '<g id="u4000"/>'
        ),
        "gzip_bytes_as_text": gzip.compress(_svg("<rect/>" * 10).encode()).decode("latin-1"),
        "empty": "<answer></answer>",
        "garbage": "<answer><svg>\x00\x01 not xml</answer>",
        "oversized": _svg("<rect/>" * 60000),
        "huge_radius": _svg('<circle cx="10" cy="10" r="1e38"/>'),  # SIGSEGV in cairo, every time
        "huge_path": _svg('<path d="M0 0 L1e30 5 Z"/>'),
        "huge_transform": _svg('<g transform="scale(1e20)"><rect width="9" height="9"/></g>'),
    }


def test_every_hostile_input_is_refused(env: gym.Env, canary_server: tuple[int, list[str]], canary_png: Path) -> None:
    port, hits = canary_server
    for name, text in hostile_inputs(port, canary_png).items():
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(text)
        assert info["action_error"] and info["env_error"] is None, name
        assert "fail twice" not in info["action_error"], (name, "refused up front, not by crashing the renderer")
        assert not any(np.all(image == CANARY_RGB, axis=2).any() for image in obs["images"]), name
        # the env is still usable: the oracle's SVG renders and wins
        obs, _reward, _terminated, _truncated, info = env.step(env.unwrapped.oracle_text())
        assert info["success"], name
    assert hits == []


def test_error_messages_explain(env: gym.Env, canary_server: tuple[int, list[str]], canary_png: Path) -> None:
    port, _ = canary_server
    inputs = hostile_inputs(port, canary_png)
    expected = {
        "file_url": "external reference",
        "http_image": "external reference",
        "css_import": "external reference",
        "xxe": "entit",
        "deep_nesting": "nesting deeper",
        "use_bomb": "<use> references expand",
        "use_cycle": "<use> references expand",
        "use_chain": "<use> references chain too deeply",
        "huge_size": "width/height",
        "empty": "no <svg>",
        "huge_radius": "out of range",
    }
    for name, fragment in expected.items():
        env.reset(seed=0)
        info = env.step(inputs[name])[-1]
        assert fragment in info["action_error"], (name, info["action_error"])


def test_a_worker_that_died_is_replaced_without_blaming_anyone() -> None:
    import os
    import signal

    env = gym.make("visrl/SvgRender-v1", size=64)
    env.reset(seed=0)
    base = env.unwrapped
    assert env.step(base.null_text())[-1]["action_error"] is None
    pid = base.renderer.get().worker.pid
    os.kill(pid, signal.SIGKILL)  # the machine's fault: the next render finds a dead worker
    info = env.step(base.oracle_text())[-1]
    assert info["success"] and info["action_error"] is None and info["env_error"] is None
    assert base.renderer.get().worker.pid not in (None, pid)
    env.close()


def test_an_svg_that_hangs_the_renderer_twice_is_the_agents_error() -> None:
    # a timeout that recurs on a fresh worker is blamed on the input (DESIGN.md section 3)
    env = gym.make("visrl/SvgRender-v1", size=64, render_timeout_s=0.001)
    env.reset(seed=0)
    _obs, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_text())
    assert info["env_error"] is None and "fail twice" in info["action_error"]
    assert reward == -0.1 and not terminated and not truncated
    env.close()


def test_a_renderer_that_cannot_run_is_an_env_error_and_reset_recovers() -> None:
    env = gym.make("visrl/SvgRender-v1", size=64)
    env.reset(seed=0)
    base = env.unwrapped
    base.renderer.inject_fault()
    obs, reward, terminated, truncated, info = env.step(base.oracle_text())
    assert "svg renderer" in info["env_error"] and truncated and not terminated and reward == 0.0
    assert obs["images"] == () and "not your fault" in obs["text"]
    env.reset(seed=1)
    info = env.step(base.oracle_text())[-1]
    assert info["success"] and info["env_error"] is None
    env.close()


def test_gzip_bomb_target_file_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.svgz"
    payload = _svg("").encode() + b" " * (64 << 20)
    bomb.write_bytes(gzip.compress(payload, compresslevel=9))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"bomb\.svgz.*inflates past"):  # at build time, naming the file
        gym.make("visrl/SvgRender-v1", size=64, targets=[bomb])


def test_close_leaves_no_worker() -> None:
    import os

    env = gym.make("visrl/SvgRender-v1", size=64)
    env.reset(seed=0)
    env.step(env.unwrapped.oracle_text())
    pid = env.unwrapped.renderer.get().worker.pid
    assert pid is not None
    env.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _sandbox_children(parents: set[int]) -> set[int]:
    """Sandbox worker pids whose parent is one of ``parents`` (other tests' workers are ignored)."""
    import subprocess

    out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,cmd"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines()[1:]:
        pid, ppid, cmd = line.split(None, 2)
        if "_sandbox_child" in cmd and int(ppid) in parents:
            found.add(int(pid))
    return found


def test_async_vector_envs_leave_no_worker_even_when_killed() -> None:
    for abrupt in (False, True):
        envs = gym.make_vec("visrl/SvgRender-v1", num_envs=2, vectorization_mode="async", size=64)
        envs.reset(seed=0)
        _, reward, terminated, _, _ = envs.step(tuple(envs.unwrapped.call("oracle_text")))
        assert terminated.all()
        workers = _sandbox_children({p.pid for p in envs.unwrapped.processes})
        assert len(workers) == 2
        if abrupt:  # a crashed trainer: the workers' parent dies, PR_SET_PDEATHSIG takes the workers
            for process in envs.unwrapped.processes:
                process.kill()
                process.join()
        else:
            envs.close()
        deadline = time.monotonic() + 5
        while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(process_alive(pid) for pid in workers), abrupt
