"""visrl: Gymnasium environments for interactive visual tasks.

``import visrl_envs`` registers every id (``gym.make("visrl/SvgRender-v1")``); without the import use
``gym.make("visrl_envs:visrl/SvgRender-v1")``.
"""

from visrl_envs.registry import REGISTRY, register_all

__version__ = "0.1.0"

register_all()

__all__ = ["REGISTRY", "__version__", "register_all"]
