"""Shared fixtures: headless pygame, the registry as test parameters."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

import pytest

import visrl_envs  # noqa: F401
from visrl_envs.registry import REGISTRY

ENV_IDS = [e.id for e in REGISTRY]
MODES = ["text", "numeric"]


@pytest.fixture(params=ENV_IDS)
def env_id(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param
