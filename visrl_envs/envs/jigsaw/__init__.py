"""Jigsaw puzzles on real photos: interactive swapping (AGILE) and static questions (Jigsaw-R1)."""

from visrl_envs.envs.jigsaw.base import DIFFICULTY_LEVELS, LADDER, JigsawEnv, Rung
from visrl_envs.envs.jigsaw.questions import JigsawFullEnv, JigsawPairEnv, JigsawQuestionEnv
from visrl_envs.envs.jigsaw.swap import JigsawSwapEnv

__all__ = [
    "DIFFICULTY_LEVELS",
    "LADDER",
    "JigsawEnv",
    "JigsawFullEnv",
    "JigsawPairEnv",
    "JigsawQuestionEnv",
    "JigsawSwapEnv",
    "Rung",
]
