"""GRPO learns: the tiny offline VLM goes from chance to >= 0.9 on the toy colour question.

The recipe is :mod:`benchmarks.grpo_learning` (random-answer SFT warm start with TRL, then GRPO with
our trainer, greedy evaluation on the test split). ``make test`` runs one seed and stops once the
10-step mean training reward reaches 0.9; ``make test-slow`` runs three seeds for all their steps,
and the same recipe through TRL's ``GRPOTrainer`` with our rollout function (TRL needs a constant lr
3e-4: at 1e-3 it collapsed to one letter within 10 steps on two seeds). The scores asserted are greedy scores
on test-split tasks the trainer never saw.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.grpo_learning import TRL_LEARNING_RATE, TRL_LR_SCHEDULER, Outcome, Recipe, run

CHANCE_BAND = 0.7  # two options: a warm start at chance scores about 0.5 greedily (it may prefer one letter)


def _check(outcome: Outcome) -> None:
    assert outcome.before[0] <= CHANCE_BAND, f"the warm start already knows the task: {outcome.before}"
    assert outcome.after[0] >= 0.9, f"GRPO did not learn: {outcome.before} -> {outcome.after}"
    assert outcome.preference_after > 0.85 > outcome.preference_before
    assert outcome.parameters_changed == 1.0
    assert all(math.isfinite(r) for r in outcome.rewards)


def test_grpo_lifts_the_toy_task_from_chance_to_090(tmp_path: Path) -> None:
    # 250 cosine steps, stopping once the 10-step training reward reaches 0.9 (step 75 when measured)
    _check(run(tmp_path, Recipe(seed=1, grpo_steps=250, stop_reward=0.9, eval_episodes=100), progress=False))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_full_recipe_learns_on_three_seeds(tmp_path: Path, seed: int) -> None:
    _check(run(tmp_path, Recipe(seed=seed), progress=False))


@pytest.mark.slow
def test_trls_grpo_trainer_learns_through_the_rollout_adapter(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    recipe = Recipe(
        seed=1,
        trainer="trl",
        learning_rate=TRL_LEARNING_RATE,
        lr_scheduler=TRL_LR_SCHEDULER,
        stop_reward=0.9,
        eval_episodes=100,
    )
    _check(run(tmp_path, recipe, progress=False))
