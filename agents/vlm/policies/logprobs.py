"""Token log-probabilities under the sampling distribution, shared by the policy and the trainer.

One function, so that what a policy records while generating (:mod:`agents.vlm.policies.hf`,
:mod:`agents.vlm.policies.prefix_cache`) and what the trainer recomputes (:mod:`agents.vlm.grpo.trainer`) are
the same numbers: the first importance ratio of an update is 1 up to float noise.
"""

from __future__ import annotations

from typing import Any


def gather_logprobs(logits: Any, targets: Any, temperature: float = 1.0, banned: Any = None) -> Any:
    """``log softmax(logits / temperature)[target]`` per position, in fp32, with ``banned`` token ids
    removed from the distribution. ``logits``: (..., T, V); ``targets``: (..., T) -> (..., T).
    Pure and differentiable: the trainer computes its new log-probabilities with it too."""
    import torch

    scaled = logits.float() / temperature
    if banned is not None and len(banned):
        scaled = scaled.index_fill(-1, banned, float("-inf"))
    picked = scaled.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)
