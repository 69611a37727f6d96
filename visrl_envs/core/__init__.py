"""The env contract shared by every family (no family imports here).

What a family uses: :class:`VisualEnv` (hooks, ``show``, ``add_backend``, ``_set_spaces``),
:class:`Outcome`, :class:`ToolSet` / :class:`Tool` / :class:`Arg` / :class:`AnswerFormat` and the
tool constraints (:class:`OrderedBox`, :class:`BoxInsideImage`, :class:`Rule`), the backends
(:class:`BackendHandle`, :class:`SharedParent`, :func:`call_with_blame`), the errors
(:class:`ActionError`, :class:`BackendError`, :class:`BackendCrash`, :class:`EnvContractError`),
and for code with rendering feedback :class:`~visrl_envs.core.feedback.RenderFeedbackEnv` and its
``Renderer``. What a trainer uses: ``env.unwrapped.prompt_spec()`` / ``info["prompt_spec"]``
(:class:`PromptSpec`), :func:`build_prompt`, the text observation ``{"images": tuple, "text": str}``
(:class:`ImageSequence`, :data:`IMAGE_MARKER`), and the staged step (:class:`PendingStep`) that
vector envs batch. The contract's checks are :mod:`visrl_envs.testing`.
"""

from visrl_envs.core.backend import BackendHandle, SharedParent, call_with_blame
from visrl_envs.core.base import SPLIT_SEED_RANGES, Outcome, PendingStep, VisualEnv
from visrl_envs.core.errors import ActionError, BackendCrash, BackendError, BackendUnavailable, EnvContractError
from visrl_envs.core.prompt import IMAGE_MARKER, ImageNote, PromptSpec, build_prompt
from visrl_envs.core.spaces import ImageSequence
from visrl_envs.core.tools import (
    Answer,
    AnswerFormat,
    Arg,
    BoxInsideImage,
    Constraint,
    OrderedBox,
    Rule,
    Tool,
    ToolCall,
    ToolContext,
    ToolSet,
)

__all__ = [
    "IMAGE_MARKER",
    "SPLIT_SEED_RANGES",
    "ActionError",
    "Answer",
    "AnswerFormat",
    "Arg",
    "BackendCrash",
    "BackendError",
    "BackendHandle",
    "BackendUnavailable",
    "BoxInsideImage",
    "Constraint",
    "EnvContractError",
    "ImageNote",
    "ImageSequence",
    "OrderedBox",
    "Outcome",
    "PendingStep",
    "PromptSpec",
    "Rule",
    "SharedParent",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolSet",
    "VisualEnv",
    "build_prompt",
    "call_with_blame",
]
