"""The ``render_mode="human"`` window (pygame; headless with ``SDL_VIDEODRIVER=dummy``)."""

from __future__ import annotations

import os

import numpy as np


class HumanDisplay:
    """A pygame window showing uint8 RGB frames at up to ``fps`` frames per second."""

    def __init__(self, title: str, fps: int) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        self._pg = pygame
        pygame.display.init()
        pygame.display.set_caption(title)
        self._fps = fps
        self._clock = pygame.time.Clock()
        self._screen: pygame.Surface | None = None

    def show(self, frame: np.ndarray) -> None:
        pg = self._pg
        height, width = frame.shape[:2]
        if self._screen is None or self._screen.get_size() != (width, height):
            self._screen = pg.display.set_mode((width, height))
        surface = pg.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (width, height), "RGB")
        self._screen.blit(surface, (0, 0))
        pg.event.pump()
        pg.display.flip()
        self._clock.tick(self._fps)

    def close(self) -> None:
        if self._screen is not None:
            self._pg.display.quit()
            self._screen = None
