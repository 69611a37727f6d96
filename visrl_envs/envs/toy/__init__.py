"""Toy tasks: tiny, fast, backend-free envs that serve as fixtures for trainer tests."""

from visrl_envs.envs.toy.shape_color import OPTIONS_BY_DIFFICULTY, PALETTE, SHAPES, ShapeColorEnv, draw_shape

__all__ = ["OPTIONS_BY_DIFFICULTY", "PALETTE", "SHAPES", "ShapeColorEnv", "draw_shape"]
