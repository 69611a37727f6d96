"""The env contract shared by every family (no family imports here).

What a family uses: :class:`VisualEnv` (hooks, ``show``, ``add_backend``, ``_set_spaces``),
:class:`Outcome`, :class:`ToolSet` / :class:`Tool` / :class:`Arg` / :class:`AnswerFormat`, the
errors (:class:`ActionError`, :class:`BackendError`, :class:`BackendCrash`), and for code with
rendering feedback :class:`~visrl_envs.core.feedback.RenderFeedbackEnv` and its ``Renderer``.
What a trainer uses: ``env.unwrapped.prompt_spec()`` / ``info["prompt_spec"]`` (:class:`PromptSpec`),
:func:`build_prompt`, the text observation ``{"images": tuple, "text": str}``
(:class:`ImageSequence`), and the staged step (:class:`PendingStep`) that vector envs batch.
"""

from visrl_envs.core.backend import BackendHandle, call_with_blame
from visrl_envs.core.base import SPLIT_SEED_RANGES, Outcome, PendingStep, VisualEnv
from visrl_envs.core.errors import ActionError, BackendCrash, BackendError, BackendUnavailable
from visrl_envs.core.prompt import PromptSpec, build_prompt
from visrl_envs.core.spaces import ImageSequence
from visrl_envs.core.tools import Answer, AnswerFormat, Arg, Tool, ToolCall, ToolSet

__all__ = [
    "SPLIT_SEED_RANGES",
    "ActionError",
    "Answer",
    "AnswerFormat",
    "Arg",
    "BackendCrash",
    "BackendError",
    "BackendHandle",
    "BackendUnavailable",
    "ImageSequence",
    "Outcome",
    "PendingStep",
    "PromptSpec",
    "Tool",
    "ToolCall",
    "ToolSet",
    "VisualEnv",
    "build_prompt",
    "call_with_blame",
]
