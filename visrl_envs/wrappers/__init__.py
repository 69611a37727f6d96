"""Observation wrappers for visrl envs, with PIL and numpy only (no opencv).

- :class:`SingleImage`: the numeric Dict observation as one image ``Box`` (H, W, 3), or several
  images of one frame stacked on the channels (H, W, 3k); for CNN scripts and SB3's ``CnnPolicy``.
- :class:`ChannelFirst`: images (H, W, C) -> (C, H, W), on a ``Box`` or every image of a ``Dict``.
- :class:`ResizeImages`: every image resized with PIL (BOX shrinking, BILINEAR growing); numeric
  ``Box``/``Dict`` and the text interface's ``images`` tuple.
- :class:`FrameStack`: the last ``k`` numeric observations stacked on the channel axis, oldest first.
- :class:`ImageBudget`: the text interface's ``images`` become the last ``k`` images of the episode.

Channels stay last until :class:`ChannelFirst`, so apply it last. A CleanRL-style pipeline::

    import gymnasium as gym
    import visrl_envs
    from visrl_envs.wrappers import ChannelFirst, FrameStack, SingleImage

    envs = gym.make_vec(
        "visrl/Jigsaw-v1", num_envs=4, vectorization_mode="async", action_mode="numeric",
        wrappers=[SingleImage, lambda e: FrameStack(e, 4), ChannelFirst],
    )
    envs.single_observation_space.shape  # (12, 84, 84)

Nothing here is registered: wrap the env that ``gym.make`` returns.
"""

from visrl_envs.wrappers.history import FrameStack, ImageBudget
from visrl_envs.wrappers.images import ChannelFirst, ResizeImages, SingleImage

__all__ = ["ChannelFirst", "FrameStack", "ImageBudget", "ResizeImages", "SingleImage"]
