"""GRPO-family advantages and policy loss as pure tensor functions, with TRL's names and defaults.

Shapes: ``B`` sequences (trajectories), ``T`` completion positions. A trajectory's completion side interleaves
model tokens (mask 1) with env tokens (mask 0), right-padded to ``T`` (padding: mask 0); see
:mod:`agents.vlm.rollout.trajectory`. Log-probabilities come from :func:`agents.vlm.policies.logprobs.gather_logprobs`.

What is computed (TRL 1.16 ``GRPOTrainer``, checked against its source):

* :func:`group_advantages`: ``(r - mean_group) / (std + 1e-4)``, std unbiased; ``scale_rewards`` picks the group
  std, the batch std or none (Dr. GRPO). NaN rewards (unscorable) are left out of the statistics and get 0.
* :func:`policy_loss`: PPO-clipped surrogate on the ratio ``exp(logp - old_logp)`` per token, or per sequence
  (GSPO), clipped to ``[1 - epsilon, 1 + epsilon_high]`` (DAPO's clip-higher), optional ``delta`` (INTELLECT-2's
  two-sided clip), ``beta`` times the k3 KL to a reference policy, aggregated as ``grpo``, ``bnpo``, ``dr_grpo`` or
  ``dapo`` (TRL's default).
* :func:`step_advantages`: GiGPO's step-level credit (Feng et al. 2025) for multi-turn trajectories, and
  :func:`broadcast_step_advantages` to turn per-step values into the (B, T) per-token advantages
  :func:`policy_loss` accepts.
* :func:`dynamic_sampling_mask`: DAPO's dynamic sampling (keep groups whose rewards differ).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "IMPORTANCE_SAMPLING_LEVELS",
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "LossConfig",
    "StepAdvantages",
    "broadcast_step_advantages",
    "discounted_returns",
    "dynamic_sampling_mask",
    "group_advantages",
    "kl_k3",
    "policy_loss",
    "state_key",
    "step_advantages",
]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")

#: TRL's constant in the advantage denominator, ``std + 1e-4``.
STD_EPS = 1e-4

GroupIds = torch.Tensor | Sequence[Hashable]


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class LossConfig:
    """The loss knobs, named and defaulted as TRL's ``GRPOConfig``.

    - ``loss_type``: how per-token losses are aggregated (see :func:`policy_loss`). ``"dapo"`` (default): sum over
      the batch's model tokens / their number (DAPO's token-level loss). ``"grpo"``: mean over each sequence's tokens,
      then over sequences (length-biased). ``"bnpo"``: sum / model tokens of the local batch. ``"dr_grpo"``: sum /
      (B * ``max_completion_length``), the constant normaliser of Dr. GRPO (pair it with ``scale_rewards="none"``).
    - ``scale_rewards``: ``"group"`` (default), ``"batch"`` or ``"none"`` (Dr. GRPO); see :func:`group_advantages`.
    - ``beta``: weight of the k3 KL to the reference policy; 0 (default) needs no reference model.
    - ``epsilon``: lower clip, ratio >= 1 - epsilon. ``epsilon_high``: upper clip, ratio <= 1 + epsilon_high;
      ``None`` (default) means ``epsilon``. DAPO's clip-higher recommends 0.28.
    - ``importance_sampling_level``: ``"token"`` (default) or ``"sequence"`` (GSPO, usually with ``loss_type="grpo"``
      and much smaller epsilons, e.g. 3e-4 / 4e-4).
    - ``mask_truncated_completions``: drop sequences cut by a length limit from the loss (DAPO's overlong filtering).
    - ``max_completion_length``: the ``dr_grpo`` normaliser (TRL's default 512).
    - ``delta``: if set, the unclipped ratio is also capped at ``delta`` (INTELLECT-2's two-sided clipping, which
      bounds the loss of negative-advantage tokens whose ratio exploded); must exceed ``1 + epsilon_high``.
    """

    loss_type: str = "dapo"
    scale_rewards: str = "group"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    importance_sampling_level: str = "token"
    mask_truncated_completions: bool = False
    max_completion_length: int | None = 512
    delta: float | None = None

    def __post_init__(self) -> None:
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        _choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        _choice("importance_sampling_level", self.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
        if not self.beta >= 0.0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in (0, 1) (the lower clip is 1 - epsilon), got {self.epsilon}")
        if self.epsilon_high is not None and not self.epsilon_high > 0.0:
            raise ValueError(f"epsilon_high must be > 0 (or None for epsilon), got {self.epsilon_high}")
        if self.max_completion_length is not None and not self.max_completion_length > 0:
            raise ValueError(f"max_completion_length must be a positive int, got {self.max_completion_length}")
        if self.loss_type == "dr_grpo" and self.max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' divides by B * max_completion_length; set max_completion_length")
        if self.delta is not None and not self.delta > 1.0 + self.eps_high:
            raise ValueError(f"delta must exceed 1 + epsilon_high = {1.0 + self.eps_high}, got {self.delta}")

    @property
    def eps_high(self) -> float:
        """The upper clip epsilon in effect (``epsilon_high``, or ``epsilon`` when that is None)."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    @property
    def clip_range(self) -> tuple[float, float]:
        """``(1 - epsilon, 1 + epsilon_high)``."""
        return 1.0 - self.epsilon, 1.0 + self.eps_high


# ----------------------------------------------------------------------------------------------------- advantages


def _group_index(group_ids: GroupIds, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Dense group indices (n,) in ``[0, n_groups)`` for arbitrary group ids (a tensor or hashable values)."""
    if isinstance(group_ids, torch.Tensor):
        if group_ids.shape != (n,):
            raise ValueError(f"group_ids must have shape ({n},), got {tuple(group_ids.shape)}")
        uniq, inverse = torch.unique(group_ids, return_inverse=True)
        return inverse.to(device), int(uniq.numel())
    keys = list(group_ids)
    if len(keys) != n:
        raise ValueError(f"{n} values but {len(keys)} group ids")
    dense: dict[Hashable, int] = {}
    try:
        index = [dense.setdefault(k, len(dense)) for k in keys]
    except TypeError as e:
        raise TypeError(f"group ids and state keys must be hashable: {e}") from None
    return torch.tensor(index, dtype=torch.long, device=device), len(dense)


def _group_stats(
    values: torch.Tensor, index: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per element of ``values`` (n,): its group's mean, unbiased std (0 below two members) and whether all the
    group's values are equal. NaN values are left out of all three."""
    valid = ~torch.isnan(values)
    zeros = values.new_zeros(n_groups)
    count = zeros.index_add(0, index, valid.to(values.dtype))
    mean = zeros.index_add(0, index, torch.where(valid, values, 0.0)) / count.clamp(min=1.0)
    dev = torch.where(valid, values - mean[index], 0.0)
    var = zeros.index_add(0, index, dev * dev) / (count - 1.0).clamp(min=1.0)
    hi = values.new_full((n_groups,), -torch.inf).scatter_reduce(
        0, index, torch.where(valid, values, -torch.inf), reduce="amax"
    )
    lo = values.new_full((n_groups,), torch.inf).scatter_reduce(
        0, index, torch.where(valid, values, torch.inf), reduce="amin"
    )
    return mean[index], var.sqrt()[index], ~(hi > lo)[index]


def _as_float_vector(x: torch.Tensor | Sequence[float], name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one value per sequence), got shape {tuple(t.shape)}")
    return t


def _normalise(
    values: torch.Tensor, index: torch.Tensor, n_groups: int, scale_rewards: str, eps: float
) -> torch.Tensor:
    mean, std, equal = _group_stats(values, index, n_groups)
    adv = values - mean
    if scale_rewards == "group":
        adv = adv / (std + eps)
    elif scale_rewards == "batch":
        valid = values[~torch.isnan(values)]
        batch_std = valid.std() if valid.numel() > 1 else values.new_zeros(())
        adv = adv / (batch_std + eps)
    # exact zeros for zero-variance groups (r - mean can be off by an ulp) and for unscorable (NaN) rewards
    return torch.where(equal | torch.isnan(values), 0.0, adv)


def group_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_ids: GroupIds,
    scale_rewards: str = "group",
    eps: float = STD_EPS,
) -> torch.Tensor:
    """GRPO advantages (B,) from rewards (B,), as TRL: ``A_i = (r_i - mean_g(i)) / (std + eps)``.

    ``group_ids`` (B,): any ids, members need not be contiguous. ``scale_rewards``: ``"group"`` divides by the std
    of the member's group, ``"batch"`` by the std of all rewards of the batch (the mean stays the group's),
    ``"none"`` does not divide (Dr. GRPO). Stds are unbiased (TRL's ``nanstd``), ``eps`` is TRL's 1e-4. A group
    whose rewards are all equal (including a group of one) gets exactly 0; NaN rewards are unscorable: left out of
    means and stds, advantage 0 (TRL)."""
    _choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    r = _as_float_vector(rewards, "rewards")
    index, n_groups = _group_index(group_ids, r.numel(), r.device)
    return _normalise(r, index, n_groups, scale_rewards, eps)


def dynamic_sampling_mask(rewards: torch.Tensor | Sequence[float], group_ids: GroupIds) -> torch.Tensor:
    """DAPO's dynamic sampling filter (B,) bool: True for members of groups whose (non-NaN) rewards are not all
    equal, i.e. groups that carry a learning signal. DAPO drops the others and samples more groups."""
    r = _as_float_vector(rewards, "rewards")
    index, n_groups = _group_index(group_ids, r.numel(), r.device)
    return ~_group_stats(r, index, n_groups)[2]


# ------------------------------------------------------------------------------------------------ GiGPO (steps)


def discounted_returns(rewards: torch.Tensor | Sequence[float], gamma: float) -> torch.Tensor:
    """Return-to-go per step (n,): ``R_t = r_t + gamma * R_{t+1}`` (GiGPO Eq. 5)."""
    r = _as_float_vector(rewards, "rewards")
    out = torch.empty_like(r)
    running = r.new_zeros(())
    for t in range(r.numel() - 1, -1, -1):
        running = r[t] + gamma * running
        out[t] = running
    return out


def state_key(state: Any) -> Hashable:
    """A hashable key for an env state or observation to group steps by (:func:`step_advantages`): arrays (e.g.
    uint8 images) by shape, dtype and a digest of their bytes; other hashable values as they are."""
    if isinstance(state, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(state).tobytes(), digest_size=16).hexdigest()
        return ("ndarray", state.shape, state.dtype.str, digest)
    hash(state)  # TypeError for unhashable values
    return state


@dataclass(frozen=True)
class StepAdvantages:
    """GiGPO's advantages for N trajectories (see :func:`step_advantages`); lists hold one (n_i,) tensor per
    trajectory, one value per step."""

    episode: torch.Tensor  # (N,) A^E: group advantage of the episode return
    step: list[torch.Tensor]  # A^S: normalised return-to-go within the step's anchor-state sub-group
    combined: list[torch.Tensor]  # A^E + omega * A^S, what the loss uses
    returns: list[torch.Tensor]  # discounted return-to-go R_t
    subgroup_sizes: list[torch.Tensor]  # size of each step's sub-group (1: no other step shares its state)


def step_advantages(
    step_rewards: Sequence[Sequence[float]],
    state_keys: Sequence[Sequence[Hashable]],
    group_ids: Sequence[Hashable],
    *,
    gamma: float = 0.95,
    omega: float = 1.0,
    scale_rewards: str = "group",
    eps: float = STD_EPS,
) -> StepAdvantages:
    """Step-level credit assignment of GiGPO ("Group-in-Group Policy Optimization", Feng et al. 2025).

    Inputs, per trajectory i (``Trajectory.steps``): ``step_rewards[i][t]`` = r_{i,t}; ``state_keys[i][t]``: a
    hashable key of the env state step t acted from (the observation before the action, e.g. :func:`state_key` of
    the image; step 0 of every group member shares the initial state since members share the env seed);
    ``group_ids[i]``: the trajectory's group (``Trajectory.group``).

    - Episode level (Eq. 3): ``A^E_i = group_advantages(sum_t r_{i,t})``, the GRPO advantage of the undiscounted
      episode return.
    - Anchor-state sub-groups (Eq. 6): all steps (j, t) of trajectories in the same group whose state keys are
      equal, across trajectories and also repeated visits within one trajectory. Groups never mix.
    - Step level (Eq. 5, 7): ``R_{i,t} = sum_{k>=t} gamma^(k-t) r_{i,k}``; ``A^S_{i,t} = (R_{i,t} - mean_S) /
      (std_S + eps)`` over the step's sub-group S (no division for ``scale_rewards="none"``, GiGPO's ``mean_norm``;
      the batch std of all returns for ``"batch"``). A sub-group of one step, or of equal returns, gives 0.
    - Combined (Eq. 8): ``A_{i,t} = A^E_i + omega * A^S_{i,t}``.

    Defaults are the paper's and verl-agent's (``gamma`` 0.95, ``step_advantage_w`` = ``omega`` 1.0, std
    normalisation ``mean_std_norm``); unlike verl-agent (unbiased std + 1e-6, episode statistics pooled over steps)
    both levels here use TRL's convention (unbiased std + 1e-4) and the episode statistics count each trajectory
    once. Returns per-step values; :func:`broadcast_step_advantages` maps them to tokens."""
    _choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    n = len(step_rewards)
    if len(state_keys) != n or len(group_ids) != n:
        raise ValueError(f"{n} reward lists, {len(state_keys)} state-key lists, {len(group_ids)} group ids")
    for i, (rs, ks) in enumerate(zip(step_rewards, state_keys, strict=True)):
        if len(rs) != len(ks):
            raise ValueError(f"trajectory {i}: {len(rs)} step rewards but {len(ks)} state keys")
        if not all(np.isfinite(float(x)) for x in rs):
            raise ValueError(f"trajectory {i}: step rewards must be finite, got {list(rs)}")

    cpu = torch.device("cpu")
    groups, _ = _group_index(group_ids, n, cpu)
    totals = torch.tensor([float(sum(rs)) for rs in step_rewards], dtype=torch.float32)
    episode = group_advantages(totals, groups, scale_rewards, eps)

    returns = [
        discounted_returns(torch.tensor([float(x) for x in rs], dtype=torch.float32), gamma) for rs in step_rewards
    ]
    lengths = [len(rs) for rs in step_rewards]
    flat = torch.cat(returns) if returns else torch.zeros(0)
    keys = [(int(groups[i]), k) for i in range(n) for k in state_keys[i]]
    sub, n_sub = _group_index(keys, len(keys), cpu)
    step_flat = _normalise(flat, sub, n_sub, scale_rewards, eps)
    sizes_flat = torch.bincount(sub, minlength=n_sub)[sub] if len(keys) else torch.zeros(0, dtype=torch.long)

    step = list(torch.split(step_flat, lengths))
    combined = [episode[i] + omega * step[i] for i in range(n)]
    return StepAdvantages(episode, step, combined, returns, list(torch.split(sizes_flat, lengths)))


def broadcast_step_advantages(
    per_step: Sequence[torch.Tensor | Sequence[float]],
    spans: Sequence[Sequence[tuple[int, int]]],
    length: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token advantages (B, length) from per-step ones: every token of turn t of sequence i, the completion
    positions ``[start, end)`` of ``spans[i][t]`` (``Step.model_span``), gets ``per_step[i][t]``; other positions
    (env tokens, padding) get 0, which :func:`policy_loss` masks anyway. Spans must lie in ``[0, length)`` and not
    overlap. If ``mask`` (B, length) is given, every model token must lie in a span (else ValueError)."""
    b = len(per_step)
    if len(spans) != b:
        raise ValueError(f"{b} advantage lists but {len(spans)} span lists")
    out = torch.zeros(b, length)
    covered = torch.zeros(b, length, dtype=torch.bool)
    for i, (adv, turns) in enumerate(zip(per_step, spans, strict=True)):
        values = torch.as_tensor(adv, dtype=torch.float32).reshape(-1)
        if values.numel() != len(turns):
            raise ValueError(f"sequence {i}: {values.numel()} step advantages but {len(turns)} spans")
        for value, (start, end) in zip(values, turns, strict=True):
            if not 0 <= start <= end <= length:
                raise ValueError(f"sequence {i}: span [{start}, {end}) is outside [0, {length})")
            if covered[i, start:end].any():
                raise ValueError(f"sequence {i}: span [{start}, {end}) overlaps another span")
            out[i, start:end] = value
            covered[i, start:end] = True
    if mask is not None:
        if mask.shape != (b, length):
            raise ValueError(f"mask must have shape ({b}, {length}), got {tuple(mask.shape)}")
        stray = mask.bool().cpu() & ~covered
        if stray.any():
            i, t = (int(x) for x in stray.nonzero()[0])
            raise ValueError(f"sequence {i}: model token at position {t} lies in no span")
    return out


# ------------------------------------------------------------------------------------------------------- the loss


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token, as TRL: ``exp(ref - lp) - (ref - lp) - 1`` (>= 0,
    unbiased for samples of pi). Same shape as the inputs."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


#: How the sampler/trainer mismatch is corrected (TRL's ``vllm_importance_sampling_mode`` values).
SAMPLING_CORRECTION_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def sampling_correction(
    old_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_max: float | None = 3.0,
    clip_min: float | None = None,
) -> torch.Tensor:
    """Importance weights for the mismatch between the engine that sampled the tokens and the trainer.

    The tokens were drawn from ``sampling_logprobs`` (a vLLM server, a bf16 ``generate``) but the loss
    treats ``old_logprobs`` (the trainer's own forward, no grad) as the behaviour policy; each token's
    policy loss is multiplied by ``exp(old - sampling)``, TRL's ``vllm_importance_sampling_correction``
    (truncated IS of Yao et al. 2025):

    - ``token_truncate``: per-token ratios clipped to ``[clip_min, clip_max]``;
    - ``token_mask``: per-token ratios outside ``[clip_min, clip_max]`` set to 0;
    - ``sequence_truncate`` / ``sequence_mask`` (TRL's default): the ratio of the summed log-difference of
      each sequence, clipped or zeroed, applied to all its tokens.

    ``None`` bounds are open. Masked positions and NaN sampling log-probabilities (an engine that gave
    none) count as no difference. Returns (B, T) for token modes, (B, 1) for sequence modes (no grad).
    """
    _choice("mode", mode, SAMPLING_CORRECTION_MODES)
    _check_2d("sampling_logprobs", sampling_logprobs, old_logprobs.shape)
    _check_2d("mask", mask, old_logprobs.shape)
    with torch.no_grad():
        diff = torch.where(mask.bool(), old_logprobs.detach() - sampling_logprobs.to(old_logprobs.dtype), 0.0)
        diff = torch.nan_to_num(diff, nan=0.0)
        if mode.startswith("sequence"):
            diff = diff.sum(-1, keepdim=True)
        ratio = torch.exp(diff)
        if mode.endswith("truncate"):
            return torch.clamp(ratio, min=clip_min, max=clip_max)
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def _check_2d(name: str, x: torch.Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} like logprobs, got {tuple(x.shape)}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    ref_logprobs: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
    sampling_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO-family loss (a scalar to minimise) and float metrics.

    Args:
        logprobs: (B, T) log-probabilities of the completion tokens under the policy being trained (with grad).
        old_logprobs: (B, T) under the policy that sampled them (no grad); ``None`` means ``logprobs.detach()``
            (TRL's shortcut when each batch is used for one update: the ratio is then exactly 1).
        advantages: (B,) per sequence, or (B, T) per token (step-level credit, :func:`broadcast_step_advantages`).
        mask: (B, T) 1 on model tokens, 0 on env tokens and padding. Masked positions are removed from every
            aggregate (loss, KL, clip fractions, ratio stats) and get zero gradient, whatever values (even inf or
            NaN) the other inputs hold there.
        config: :class:`LossConfig`.
        ref_logprobs: (B, T) under the reference policy; required when ``config.beta > 0`` (adds ``beta * k3``
            per token before aggregation); when given with beta 0 only the ``kl`` metric is computed.
        truncated: (B,) bool, True where the completion was cut by a length limit; with
            ``config.mask_truncated_completions`` those sequences' masks are zeroed (required then).
        num_items_in_batch: ``dapo`` only: the token count to divide by instead of this batch's model tokens. TRL
            divides by the model tokens of the whole generation batch over all processes, rescaled to one
            micro-batch; here, pass the model tokens of all the micro-batches accumulated into one optimiser step
            (divided by the number of processes when data-parallel gradients are averaged), so that the summed
            micro-batch losses are one token-mean over the step. Default: this batch's model tokens.
        sampling_weights: (B, T) or (B, 1) from :func:`sampling_correction`; multiplies each token's policy term
            (not the KL term), as TRL does.

    Per token: ``ratio = exp(logprobs - old_logprobs)``; for ``importance_sampling_level="sequence"`` (GSPO) the
    ratio of sequence i is ``s_i = exp(masked mean_t (logprobs - old_logprobs))``, broadcast to its tokens as
    GSPO-token's ``sg[s_i] * pi_t / sg[pi_t]``: each token's value is s_i but its gradient is ``s_i * grad log pi_t``,
    so per-token advantages credit their own tokens (for (B,) advantages this equals GSPO's and TRL's gradient).
    Loss per token ``-min(r * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)`` with ``r = min(ratio, delta)``
    when ``delta`` is set, plus ``beta * k3``. Aggregation over model tokens m (n_i per sequence, N in all):

    - ``grpo``: ``mean_i (sum_t l m / max(n_i, 1))`` (mean over all B sequences, as TRL);
    - ``bnpo``: ``sum l m / max(N, 1)``;
    - ``dr_grpo``: ``sum l m / (B * max_completion_length)``;
    - ``dapo``: ``sum l m / max(num_items_in_batch or N, 1)``: in one process without accumulation it equals bnpo.

    Metrics (TRL's names where TRL has them): ``clip_ratio/low_mean`` (ratio < 1 - epsilon with A < 0),
    ``clip_ratio/high_mean`` (ratio > 1 + epsilon_high with A > 0), ``clip_ratio/region_mean``, ``ratio/mean``,
    ``ratio/min``, ``ratio/max``, ``kl`` (when ``ref_logprobs`` is given), ``num_tokens``. Token-level means are over
    model tokens; for ``"sequence"`` the clip fractions and ratio stats are over sequences with model tokens (TRL's
    per-sequence reading). Without model tokens: means 0, ratio stats NaN, loss 0 (still differentiable).
    """
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (B, T), got shape {tuple(logprobs.shape)}")
    shape = logprobs.shape
    bsz = shape[0]
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    _check_2d("old_logprobs", old, shape)
    _check_2d("mask", mask, shape)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1")
    if ref_logprobs is not None:
        _check_2d("ref_logprobs", ref_logprobs, shape)
    elif config.beta > 0.0:
        raise ValueError(f"beta={config.beta} > 0 needs ref_logprobs (or set beta=0)")
    if num_items_in_batch is not None and config.loss_type != "dapo":
        raise ValueError(f"num_items_in_batch applies to loss_type='dapo' only, not {config.loss_type!r}")

    m = mask.bool()
    if truncated is not None and truncated.shape != (bsz,):
        raise ValueError(f"truncated must have shape ({bsz},), got {tuple(truncated.shape)}")
    if config.mask_truncated_completions:
        if truncated is None:
            raise ValueError("mask_truncated_completions=True needs `truncated` (B,) bool")
        m = m & ~truncated.bool().to(m.device)[:, None]
    dtype = logprobs.dtype
    w = m.to(dtype)

    if advantages.dim() == 1:
        if advantages.shape != (bsz,):
            raise ValueError(f"advantages must be (B,) or (B, T), got shape {tuple(advantages.shape)}")
        advantages = advantages[:, None].expand(shape)
    else:
        _check_2d("advantages", advantages, shape)
    adv = torch.where(m, advantages.to(dtype), 0.0)

    log_ratio = torch.where(m, logprobs - old, 0.0)
    tokens_per_seq = w.sum(-1)
    sequence_level = config.importance_sampling_level == "sequence"
    if sequence_level:
        seq_log_ratio = log_ratio.sum(-1) / tokens_per_seq.clamp(min=1.0)
        lp = torch.where(m, logprobs, 0.0)
        log_weight = seq_log_ratio.detach()[:, None] + (lp - lp.detach())
    else:
        log_weight = log_ratio
    ratio = torch.exp(log_weight)

    low, high = config.clip_range
    clipped = torch.clamp(ratio, low, high)
    unclipped = ratio if config.delta is None else torch.clamp(ratio, max=config.delta)
    per_token = -torch.min(unclipped * adv, clipped * adv)
    if sampling_weights is not None:
        if sampling_weights.shape not in (shape, (bsz, 1)):
            raise ValueError(f"sampling_weights must be (B, T) or (B, 1), got {tuple(sampling_weights.shape)}")
        per_token = per_token * torch.where(m, sampling_weights.detach().to(dtype), 0.0)

    kl: torch.Tensor | None = None
    if ref_logprobs is not None:
        kl = kl_k3(torch.where(m, logprobs, 0.0), torch.where(m, ref_logprobs.to(dtype), 0.0))
        if config.beta > 0.0:
            per_token = per_token + config.beta * kl
    per_token = torch.where(m, per_token, 0.0)

    n_tokens = w.sum()
    if config.loss_type == "grpo":
        loss = (per_token.sum(-1) / tokens_per_seq.clamp(min=1.0)).mean()
    elif config.loss_type == "bnpo":
        loss = per_token.sum() / n_tokens.clamp(min=1.0)
    elif config.loss_type == "dr_grpo":
        assert config.max_completion_length is not None  # LossConfig checks
        loss = per_token.sum() / (bsz * config.max_completion_length)
    else:  # dapo
        denom = n_tokens if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=dtype)
        loss = per_token.sum() / denom.to(per_token.device).clamp(min=1.0)

    return loss, _metrics(ratio.detach(), adv, m, low, high, sequence_level, kl)


def _metrics(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    m: torch.Tensor,
    low: float,
    high: float,
    sequence_level: bool,
    kl: torch.Tensor | None,
) -> dict[str, float]:
    with torch.no_grad():
        w = m.to(torch.float32)
        n = float(w.sum())
        is_low = (ratio < low) & (adv < 0) & m
        is_high = (ratio > high) & (adv > 0) & m
        flags = {"low": is_low, "high": is_high, "region": is_low | is_high}
        if sequence_level:  # per sequence with model tokens, as TRL's GSPO logging
            active = m.any(-1)
            per_seq = w.sum(-1).clamp(min=1.0)
            n_seq = float(active.sum())
            out = {
                f"clip_ratio/{k}_mean": float((v.float().sum(-1) / per_seq).sum()) / max(n_seq, 1.0)
                for k, v in flags.items()
            }
            values = ratio[:, 0][active] if ratio.shape[1] else ratio.new_zeros(0)
        else:
            out = {f"clip_ratio/{k}_mean": float(v.float().sum()) / max(n, 1.0) for k, v in flags.items()}
            values = ratio[m]
        values = values.float()
        empty = values.numel() == 0
        out["ratio/mean"] = float("nan") if empty else float(values.mean())
        out["ratio/min"] = float("nan") if empty else float(values.min())
        out["ratio/max"] = float("nan") if empty else float(values.max())
        if kl is not None:
            out["kl"] = float((kl.detach().float() * w).sum()) / max(n, 1.0)
        out["num_tokens"] = n
    return out
