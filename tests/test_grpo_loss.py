"""GRPO-family advantages and loss (agents/vlm/grpo/loss.py) against hand-computed values.

Every expected number below is worked out by hand in the comment next to it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.vlm.grpo.loss import (
    LOSS_TYPES,
    LossConfig,
    broadcast_step_advantages,
    discounted_returns,
    dynamic_sampling_mask,
    group_advantages,
    kl_k3,
    policy_loss,
    sampling_correction,
    state_key,
    step_advantages,
)

EPS = 1e-4  # TRL's std epsilon
LN = math.log


def approx(x: torch.Tensor | float, expected: object, tol: float = 1e-5) -> bool:
    return bool(torch.allclose(torch.as_tensor(x, dtype=torch.float32), torch.tensor(expected), atol=tol, rtol=0))


def leaf(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


# ------------------------------------------------------------------------------------------------- advantages


def test_zero_variance_group_gives_exactly_zero() -> None:
    # group 0: three equal rewards (0.3 is inexact in float: r - mean may be off by an ulp, must still be 0)
    # group 1: [1, 0] -> mean 0.5, unbiased std sqrt(0.5) = 0.70711 -> +-0.5 / 0.70721
    for scale in ("group", "batch", "none"):
        adv = group_advantages([0.3, 0.3, 0.3, 1.0, 0.0], [0, 0, 0, 1, 1], scale)
        assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    adv = group_advantages([0.3, 0.3, 0.3, 1.0, 0.0], [0, 0, 0, 1, 1])
    assert approx(adv[3:], [0.5 / (math.sqrt(0.5) + EPS), -0.5 / (math.sqrt(0.5) + EPS)])
    assert group_advantages([5.0], [7]).tolist() == [0.0]  # a group of one


def test_group_batch_none_scaling() -> None:
    # group a = [1, 0, 0, 0]: mean 0.25, deviations [.75, -.25, -.25, -.25], unbiased var (.5625 + 3 * .0625) / 3
    #   = .25 -> std 0.5.   group b = [2, 4]: mean 3, deviations [-1, 1], std sqrt(2).
    # batch [1, 0, 0, 0, 2, 4]: mean 7/6, sum of squared deviations 462/36, unbiased var 462/180 -> std 1.602082.
    # Members of a group need not be contiguous: ids interleave.
    rewards = [1.0, 2.0, 0.0, 0.0, 4.0, 0.0]
    ids = ["a", "b", "a", "a", "b", "a"]
    dev = [0.75, -1.0, -0.25, -0.25, 1.0, -0.25]
    std = [0.5, math.sqrt(2), 0.5, 0.5, math.sqrt(2), 0.5]
    assert approx(group_advantages(rewards, ids, "group"), [d / (s + EPS) for d, s in zip(dev, std, strict=True)])
    batch_std = math.sqrt(462 / 180)
    assert approx(batch_std, 1.602082)
    assert approx(group_advantages(rewards, ids, "batch"), [d / (batch_std + EPS) for d in dev])
    assert approx(group_advantages(rewards, ids, "none"), dev)
    # tensor ids work the same
    assert approx(group_advantages(torch.tensor(rewards), torch.tensor([0, 1, 0, 0, 1, 0]), "none"), dev)


def test_nan_reward_is_unscorable() -> None:
    # TRL: a NaN reward is left out of its group's mean/std and gets advantage 0: group [1, nan, 0] -> [1, 0] stats
    adv = group_advantages([1.0, float("nan"), 0.0], [0, 0, 0])
    assert approx(adv, [0.5 / (math.sqrt(0.5) + EPS), 0.0, -0.5 / (math.sqrt(0.5) + EPS)])


def test_dynamic_sampling_mask() -> None:
    # groups: 0 all 1 -> drop; 1 mixed -> keep; 2 all 0 -> drop; 3 single -> drop; 4 [0.5, nan] -> one scoreable -> drop
    rewards = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.7, 0.5, float("nan")]
    ids = [0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert dynamic_sampling_mask(rewards, ids).tolist() == [False, False, True, True, False, False, False, False, False]


# ------------------------------------------------------------------------------------------------------- GiGPO


def test_discounted_returns() -> None:
    # r = [1, 0, 2], gamma 0.5: R2 = 2, R1 = 0 + .5 * 2 = 1, R0 = 1 + .5 * 1 = 1.5
    assert approx(discounted_returns([1.0, 0.0, 2.0], 0.5), [1.5, 1.0, 2.0])


def test_gigpo_subgroups_on_shared_state() -> None:
    # group 0: A visits s0 -> s1, rewards [0, 1]; B visits s0 -> s2 -> s1, rewards [0, 0, 0].
    # group 1: C visits s0 with reward 1 (same key as group 0's s0 but another group: must not join it).
    # gamma 0.5: returns A [0 + .5 * 1, 1] = [.5, 1]; B [0, 0, 0]; C [1].
    # Sub-groups of group 0: s0 {A0 .5, B0 0} mean .25; s1 {A1 1, B2 0} mean .5; s2 {B1} alone.
    # scale none: A^S A [.25, .5], B [-.25, 0, -.5]; episode totals A 1, B 0 -> A^E +.5, -.5; C alone -> 0.
    out = step_advantages(
        [[0.0, 1.0], [0.0, 0.0, 0.0], [1.0]],
        [["s0", "s1"], ["s0", "s2", "s1"], ["s0"]],
        [0, 0, 1],
        gamma=0.5,
        scale_rewards="none",
    )
    assert approx(out.episode, [0.5, -0.5, 0.0])
    assert approx(out.returns[0], [0.5, 1.0]) and approx(out.returns[1], [0.0, 0.0, 0.0])
    assert approx(out.step[0], [0.25, 0.5]) and approx(out.step[1], [-0.25, 0.0, -0.5]) and approx(out.step[2], [0.0])
    assert [s.tolist() for s in out.subgroup_sizes] == [[2, 2], [2, 1, 2], [1]]
    # combined, omega 1: A [.75, 1], B [-.75, -.5, -1], C [0]
    assert approx(out.combined[0], [0.75, 1.0]) and approx(out.combined[1], [-0.75, -0.5, -1.0])
    assert approx(out.combined[2], [0.0])

    # omega 2, std scaling: a pair {x, 0} normalises to +-(x/2) / (|x| / sqrt 2 + eps); episode +-.5 / (.70711 + eps)
    out = step_advantages(
        [[0.0, 1.0], [0.0, 0.0, 0.0], [1.0]],
        [["s0", "s1"], ["s0", "s2", "s1"], ["s0"]],
        [0, 0, 1],
        gamma=0.5,
        omega=2.0,
    )
    e = 0.5 / (math.sqrt(0.5) + EPS)
    s0 = 0.25 / (0.5 / math.sqrt(2) + EPS)
    s1 = 0.5 / (1 / math.sqrt(2) + EPS)
    assert approx(out.step[0], [s0, s1]) and approx(out.step[1], [-s0, 0.0, -s1])
    assert approx(out.combined[0], [e + 2 * s0, e + 2 * s1])
    assert approx(out.combined[1], [-e - 2 * s0, -e, -e - 2 * s1])


def test_gigpo_defaults_and_revisits() -> None:
    # a state revisited within one trajectory joins the same sub-group: X visits s, s with rewards [0, 1], gamma .95:
    # returns [.95, 1] -> sub-group {.95, 1} mean .975, none -> [-.025, .025]; single trajectory -> episode 0.
    out = step_advantages([[0.0, 1.0]], [["s", "s"]], ["g"], scale_rewards="none")
    assert approx(out.returns[0], [0.95, 1.0]) and approx(out.step[0], [-0.025, 0.025])
    assert out.subgroup_sizes[0].tolist() == [2, 2]


def test_state_key_for_images() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert state_key(a) == state_key(a.copy()) != state_key(b)
    assert state_key("text") == "text"
    with pytest.raises(TypeError):
        state_key([1, 2])


def test_broadcast_step_advantages_to_turn_tokens() -> None:
    # A: turns at [0, 2) and [4, 6) of 7 positions (2, 3 are env tokens, 6 padding); B: turns [0, 1), [2, 3), [5, 7)
    adv = broadcast_step_advantages([[0.75, 1.0], [-0.75, -0.5, -1.0]], [[(0, 2), (4, 6)], [(0, 1), (2, 3), (5, 7)]], 7)
    assert adv.tolist() == [[0.75, 0.75, 0.0, 0.0, 1.0, 1.0, 0.0], [-0.75, 0.0, -0.5, 0.0, 0.0, -1.0, -1.0]]
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0], [1, 0, 1, 0, 0, 1, 1]])
    broadcast_step_advantages([[1.0, 1.0], [1.0, 1.0, 1.0]], [[(0, 2), (4, 6)], [(0, 1), (2, 3), (5, 7)]], 7, mask)
    mask[0, 3] = 1  # a model token outside every turn span
    with pytest.raises(ValueError, match="no span"):
        broadcast_step_advantages([[1.0, 1.0], [1.0, 1.0, 1.0]], [[(0, 2), (4, 6)], [(0, 1), (2, 3), (5, 7)]], 7, mask)
    with pytest.raises(ValueError, match="overlaps"):
        broadcast_step_advantages([[1.0, 1.0]], [[(0, 3), (2, 4)]], 7)
    with pytest.raises(ValueError, match="outside"):
        broadcast_step_advantages([[1.0]], [[(5, 9)]], 7)
    with pytest.raises(ValueError, match="spans"):
        broadcast_step_advantages([[1.0]], [[(0, 1), (1, 2)]], 7)


# ------------------------------------------------------------------------------------------------------ the loss

# two sequences of unequal length: seq 0 has 2 model tokens then padding, seq 1 has model, env, model, model
MASK = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1]])
LP = [[-0.5, -1.0, -2.0, -0.1], [-0.3, -4.0, -0.7, -1.2]]


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_ratio_is_one_and_loss_is_minus_aggregated_advantage(level: str) -> None:
    # advantages (+.5, -1); before the first update ratio = exp(0) = 1 exactly, so the per-token loss is -A:
    # seq 0: 2 tokens * -.5 = -1; seq 1: 3 tokens * +1 = 3.
    # grpo: mean(-.5, 1) = .25; bnpo/dapo: (-1 + 3) / 5 = .4; dr_grpo (L = 8): 2 / (2 * 8) = .125
    expected = {"grpo": 0.25, "bnpo": 0.4, "dapo": 0.4, "dr_grpo": 0.125}
    adv = torch.tensor([0.5, -1.0])
    for loss_type in LOSS_TYPES:
        lp = leaf(LP)
        cfg = LossConfig(loss_type=loss_type, max_completion_length=8, importance_sampling_level=level)
        for old in (lp.detach().clone(), None):
            loss, metrics = policy_loss(lp, old, adv, MASK, cfg)
            assert approx(loss, expected[loss_type]), loss_type
            assert metrics["ratio/mean"] == metrics["ratio/min"] == metrics["ratio/max"] == 1.0
            assert metrics["clip_ratio/region_mean"] == 0.0
            assert metrics["num_tokens"] == 5.0


def test_each_normaliser_with_unequal_lengths() -> None:
    # ratio 1, per-token advantages (9s sit on masked positions), so per-token losses are -A on model tokens:
    # seq 0 (tokens 0, 1) [-1, -3], sum -4; seq 1 (tokens 0, 2, 3) [-2, -2, -6], sum -10; 5 tokens, sum -14.
    # grpo: mean(-4/2, -10/3) = -2.6667; bnpo/dapo: -14/5 = -2.8; dr_grpo L = 10: -14/(2*10) = -.7; dapo N = 7: -2
    adv = torch.tensor([[1.0, 3.0, 9.0, 9.0], [2.0, 9.0, 2.0, 6.0]])
    lp = torch.tensor(LP)
    expected = {"grpo": -(2 + 10 / 3) / 2, "bnpo": -2.8, "dapo": -2.8, "dr_grpo": -0.7}
    for loss_type, value in expected.items():
        loss, _ = policy_loss(lp, lp, adv, MASK, LossConfig(loss_type=loss_type, max_completion_length=10))
        assert approx(loss, value), loss_type
    loss, _ = policy_loss(lp, lp, adv, MASK, LossConfig(), num_items_in_batch=7)
    assert approx(loss, -2.0)
    loss, _ = policy_loss(lp, lp, adv, MASK, LossConfig(), num_items_in_batch=torch.tensor(7))
    assert approx(loss, -2.0)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_masked_positions_change_nothing(loss_type: str, level: str) -> None:
    # garbage (inf, NaN, huge) on env tokens and padding in every input: loss, metrics and gradients are unchanged
    cfg = LossConfig(loss_type=loss_type, importance_sampling_level=level, beta=0.05, epsilon_high=0.28, delta=2.0)
    old = torch.tensor([[-0.4, -1.3, 0.0, 0.0], [-0.2, 0.0, -0.9, -1.0]])
    ref = torch.tensor([[-0.6, -0.8, 0.0, 0.0], [-0.5, 0.0, -0.6, -1.5]])
    adv = torch.tensor([[1.0, 0.5, 0.0, 0.0], [-1.0, 0.0, 2.0, -0.5]])

    def run(lp_v: list[list[float]], old_t: torch.Tensor, ref_t: torch.Tensor, adv_t: torch.Tensor):
        lp = leaf(lp_v)
        loss, metrics = policy_loss(lp, old_t, adv_t, MASK, cfg, ref_logprobs=ref_t)
        loss.backward()
        assert lp.grad is not None
        return loss.detach(), metrics, lp.grad

    base = run(LP, old, ref, adv)
    junk = MASK == 0
    lp2 = torch.tensor(LP).masked_fill(junk, 50.0).tolist()
    lp2[1][1] = float("nan")
    other = run(
        lp2,
        old.masked_fill(junk, -float("inf")),
        ref.masked_fill(junk, float("nan")),
        adv.masked_fill(junk, 1e6),
    )
    assert torch.equal(base[0], other[0])
    assert base[1] == other[1]
    assert torch.equal(base[2], other[2])
    assert base[2][junk].abs().sum() == 0.0
    assert base[2][~junk].abs().sum() > 0.0


def test_clipping_values_and_zero_gradients() -> None:
    # epsilon .2 / epsilon_high .28 -> clip range [.8, 1.28]; one sequence, four tokens, dapo (N = 4):
    #   t0 ratio 1.5, A +1: min(1.5, 1.28) = 1.28 -> loss -1.28, clipped high, zero grad
    #   t1 ratio 1.5, A -1: min(-1.5, -1.28) = -1.5 -> loss 1.5, unclipped, grad -A * ratio / N = .375
    #   t2 ratio .5,  A -1: min(-.5, -.8) = -.8 -> loss .8, clipped low, zero grad
    #   t3 ratio .5,  A +1: min(.5, .8) = .5 -> loss -.5, unclipped, grad -.5 / 4 = -.125
    # loss (-1.28 + 1.5 + .8 - .5) / 4 = .13
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    mask = torch.ones(1, 4)
    lp = leaf([[LN(1.5), LN(1.5), LN(0.5), LN(0.5)]])
    loss, metrics = policy_loss(lp, old, adv, mask, LossConfig(epsilon_high=0.28))
    loss.backward()
    assert lp.grad is not None
    assert approx(loss, 0.13)
    assert approx(lp.grad, [[0.0, 0.375, 0.0, -0.125]])
    assert metrics["clip_ratio/low_mean"] == 0.25 and metrics["clip_ratio/high_mean"] == 0.25
    assert metrics["clip_ratio/region_mean"] == 0.5
    assert (
        approx(metrics["ratio/mean"], 1.0) and approx(metrics["ratio/min"], 0.5) and approx(metrics["ratio/max"], 1.5)
    )

    # symmetric default (epsilon_high None -> .2): t0 now clipped at 1.2 -> (-1.2 + 1.5 + .8 - .5) / 4 = .15
    lp = leaf([[LN(1.5), LN(1.5), LN(0.5), LN(0.5)]])
    loss, _ = policy_loss(lp, old, adv, mask, LossConfig())
    assert approx(loss, 0.15)

    # delta 1.4 caps t1's ratio: min(-1.4, -1.28) = -1.4 -> loss 1.4 with zero grad; (-1.28 + 1.4 + .8 - .5) / 4 = .105
    lp = leaf([[LN(1.5), LN(1.5), LN(0.5), LN(0.5)]])
    loss, _ = policy_loss(lp, old, adv, mask, LossConfig(epsilon_high=0.28, delta=1.4))
    loss.backward()
    assert lp.grad is not None
    assert approx(loss, 0.105)
    assert approx(lp.grad, [[0.0, 0.0, 0.0, -0.125]])


def test_kl_k3_values() -> None:
    # lp = ln .5, ref = ln .25: d = ref - lp = ln .5 -> .5 - ln .5 - 1 = .193147; swapped: d = ln 2 -> 2 - ln 2 - 1 = .306853
    lp = torch.tensor([LN(0.5), LN(0.25), -1.0])
    ref = torch.tensor([LN(0.25), LN(0.5), -1.0])
    assert approx(kl_k3(lp, ref), [0.5 - LN(0.5) - 1, 2 - LN(2) - 1, 0.0])
    assert approx(kl_k3(lp, ref), [0.193147, 0.306853, 0.0])


def test_kl_term_in_loss_and_metric() -> None:
    # ratio 1, A = 0 -> the loss is beta * mean k3; tokens: k3 .193147 and .306853 -> mean .25 -> beta .1 -> .025
    lp = leaf([[LN(0.5), LN(0.25), 0.0]])
    ref = torch.tensor([[LN(0.25), LN(0.5), 7.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = policy_loss(lp, None, torch.zeros(1), mask, LossConfig(beta=0.1), ref_logprobs=ref)
    assert approx(loss, 0.025) and approx(metrics["kl"], 0.25)
    # beta 0 with ref: the metric only
    loss, metrics = policy_loss(lp, None, torch.zeros(1), mask, LossConfig(), ref_logprobs=ref)
    assert loss.item() == 0.0 and approx(metrics["kl"], 0.25)
    assert "kl" not in policy_loss(lp, None, torch.zeros(1), mask, LossConfig())[1]


def test_gspo_sequence_ratio_and_per_token_gradient() -> None:
    # one sequence, tokens 0, 1 are model tokens, 2 an env token; log ratios [ln 2, 0] -> mean ln 2 / 2 -> s = sqrt 2
    # epsilon .5 keeps s inside [.5, 1.5]; per-token A = [1, -2]; grpo: loss = mean_t(-s * A_t) = -s (1 - 2) / 2 = .7071
    # GSPO-token gradient: d/dlp_t = -s * A_t / 2 = [-.7071, 1.4142, 0] (each token by its own advantage)
    cfg = LossConfig(loss_type="grpo", importance_sampling_level="sequence", epsilon=0.5)
    old = torch.tensor([[0.0, -1.0, 3.0]])
    mask = torch.tensor([[1, 1, 0]])
    lp = leaf([[LN(2), -1.0, 0.0]])
    loss, metrics = policy_loss(lp, old, torch.tensor([[1.0, -2.0, 0.0]]), mask, cfg)
    loss.backward()
    assert lp.grad is not None
    s = math.sqrt(2)
    assert approx(loss, s / 2) and approx(metrics["ratio/mean"], s)
    assert approx(lp.grad, [[-s / 2, s, 0.0]])

    # default clip (.2 / .2): s = 1.414 > 1.2 with A > 0 -> the whole sequence is clipped: no gradient, fraction 1
    lp = leaf([[LN(2), -1.0, 0.0]])
    loss, metrics = policy_loss(lp, old, torch.tensor([1.0]), mask, LossConfig(importance_sampling_level="sequence"))
    loss.backward()
    assert lp.grad is not None
    assert approx(loss, -1.2) and lp.grad.abs().sum() == 0.0 and metrics["clip_ratio/high_mean"] == 1.0


def test_gspo_matches_plain_sequence_ratio_for_sequence_advantages() -> None:
    # with (B,) advantages the broadcast form has the value and gradient of s_i = exp(masked mean log ratio) itself
    # (GSPO, TRL's form): check against that written out, for a grpo and a dapo aggregation
    old = torch.tensor([[-0.4, -1.3, 0.0, 0.0], [-0.2, 0.0, -0.9, -1.0]])
    adv = torch.tensor([0.7, -1.3])
    m = MASK.float()
    for loss_type in ("grpo", "dapo"):
        cfg = LossConfig(loss_type=loss_type, importance_sampling_level="sequence", epsilon=0.5)
        lp = leaf(LP)
        loss, _ = policy_loss(lp, old, adv, MASK, cfg)
        loss.backward()
        lp2 = leaf(LP)
        s = torch.exp(((lp2 - old) * m).sum(-1) / m.sum(-1))
        per_seq = -torch.min(s * adv, s.clamp(0.5, 1.5) * adv)
        ref = per_seq.mean() if loss_type == "grpo" else (per_seq * m.sum(-1)).sum() / m.sum()
        ref.backward()
        assert approx(loss, ref.item()) and lp.grad is not None and lp2.grad is not None
        assert torch.allclose(lp.grad, lp2.grad, atol=1e-6)


def test_mask_truncated_completions() -> None:
    # seq 1 truncated: dapo over seq 0's 2 tokens only -> -(.5 * 2) / 2 = -.5; seq 1 gets no gradient
    adv = torch.tensor([0.5, -1.0])
    truncated = torch.tensor([False, True])
    lp = leaf(LP)
    loss, metrics = policy_loss(lp, None, adv, MASK, LossConfig(mask_truncated_completions=True), truncated=truncated)
    loss.backward()
    assert lp.grad is not None
    assert approx(loss, -0.5) and metrics["num_tokens"] == 2.0 and lp.grad[1].abs().sum() == 0.0
    # flag off: truncated is ignored (.4 as in the ratio-1 test)
    assert approx(policy_loss(lp, None, adv, MASK, LossConfig(), truncated=truncated)[0], 0.4)
    # grpo keeps TRL's mean over all B sequences: (-.5 + 0) / 2
    cfg = LossConfig(loss_type="grpo", mask_truncated_completions=True)
    assert approx(policy_loss(lp, None, adv, MASK, cfg, truncated=truncated)[0], -0.25)
    with pytest.raises(ValueError, match="truncated"):
        policy_loss(lp, None, adv, MASK, LossConfig(mask_truncated_completions=True))


def test_empty_mask_is_zero_not_nan() -> None:
    lp = leaf(LP)
    for loss_type in LOSS_TYPES:
        loss, metrics = policy_loss(lp, None, torch.ones(2), torch.zeros(2, 4), LossConfig(loss_type=loss_type))
        assert loss.item() == 0.0 and metrics["clip_ratio/region_mean"] == 0.0 and math.isnan(metrics["ratio/mean"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_type": "ppo"}, "loss_type"),
        ({"scale_rewards": "std"}, "scale_rewards"),
        ({"importance_sampling_level": "seq"}, "importance_sampling_level"),
        ({"beta": -0.1}, "beta"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon_high": -0.1}, "epsilon_high"),
        ({"epsilon_high": 0.28, "delta": 1.2}, "delta"),
        ({"max_completion_length": 0}, "max_completion_length"),
        ({"loss_type": "dr_grpo", "max_completion_length": None}, "max_completion_length"),
    ],
)
def test_bad_configs_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_calls_raise() -> None:
    lp = torch.tensor(LP)
    adv = torch.ones(2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, None, adv, MASK, LossConfig(beta=0.04))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        policy_loss(lp, None, adv, MASK, LossConfig(loss_type="bnpo"), num_items_in_batch=5)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, None, torch.ones(3), MASK, LossConfig())
    with pytest.raises(ValueError, match="mask"):
        policy_loss(lp, None, adv, MASK[:, :3], LossConfig())
    with pytest.raises(ValueError, match="only 0 and 1"):
        policy_loss(lp, None, adv, MASK * 2, LossConfig())
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages([1.0, 0.0], [0, 0], "std")
    with pytest.raises(ValueError, match="group ids"):
        group_advantages([1.0, 0.0], [0])
    with pytest.raises(ValueError, match="gamma"):
        step_advantages([[1.0]], [["s"]], [0], gamma=1.5)
    with pytest.raises(ValueError, match="state keys"):
        step_advantages([[1.0, 0.0]], [["s"]], [0])
    assert LossConfig().clip_range == (0.8, 1.2) and LossConfig(epsilon_high=0.28).eps_high == 0.28


# --- sampler / trainer mismatch (TRL's vllm_importance_sampling_correction) -------------------------


def test_sampling_correction_modes_on_hand_computed_values() -> None:
    # Two sequences, three positions; the last position of row 1 is an env token (mask 0).
    old = torch.tensor([[LN(0.5), LN(0.2), LN(0.9)], [LN(0.4), LN(0.1), 7.0]])
    sampled = torch.tensor([[LN(0.25), LN(0.2), LN(0.3)], [LN(0.8), float("nan"), -7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # token ratios: row 0: 2, 1, 3; row 1: 0.5, 1 (NaN sampled: no difference), 1 (masked)
    assert approx(sampling_correction(old, sampled, mask, "token_truncate", 2.5), [[2, 1, 2.5], [0.5, 1, 1]])
    assert approx(sampling_correction(old, sampled, mask, "token_truncate", None, 0.75), [[2, 1, 3], [0.75, 1, 1]])
    assert approx(sampling_correction(old, sampled, mask, "token_mask", 2.5, 0.6), [[2.0, 1, 0], [0, 1, 1]])
    # sequence ratios: row 0: 2 * 1 * 3 = 6; row 1: 0.5
    assert approx(sampling_correction(old, sampled, mask, "sequence_truncate", 3.0), [[3.0], [0.5]])
    assert approx(sampling_correction(old, sampled, mask, "sequence_mask", 3.0), [[0.0], [0.5]])
    assert approx(sampling_correction(old, sampled, mask), [[0.0], [0.5]]), "TRL's defaults: sequence_mask, 3.0"
    with pytest.raises(ValueError, match="mode"):
        sampling_correction(old, sampled, mask, "tokens")


def test_sampling_weights_scale_the_policy_term_but_not_the_kl() -> None:
    logprobs = torch.tensor([[LN(0.5), LN(0.25)]], requires_grad=True)
    ref = torch.tensor([[LN(0.25), LN(0.25)]])
    mask = torch.ones(1, 2)
    config = LossConfig(loss_type="bnpo", beta=0.1)
    weights = torch.tensor([[2.0, 0.5]])
    loss, _ = policy_loss(logprobs, None, torch.tensor([1.0]), mask, config, ref_logprobs=ref, sampling_weights=weights)
    # ratio 1: policy term -A * w per token = -2, -0.5; k3 of ref/pi: token 0: 0.5 - ln 0.5 - 1, token 1: 0
    k3 = 0.5 - LN(0.5) - 1
    assert approx(loss, (-2.0 - 0.5 + 0.1 * k3) / 2)
    plain, _ = policy_loss(logprobs, None, torch.tensor([1.0]), mask, config, ref_logprobs=ref)
    assert approx(plain, (-1.0 - 1.0 + 0.1 * k3) / 2)
    sequence, _ = policy_loss(
        logprobs, None, torch.tensor([1.0]), mask, config, ref_logprobs=ref, sampling_weights=torch.tensor([[0.5]])
    )
    assert approx(sequence, (-0.5 - 0.5 + 0.1 * k3) / 2)
    with pytest.raises(ValueError, match="sampling_weights"):
        policy_loss(
            logprobs, None, torch.tensor([1.0]), mask, config, ref_logprobs=ref, sampling_weights=torch.ones(2, 2)
        )
