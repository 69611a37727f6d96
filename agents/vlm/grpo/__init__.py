"""GRPO-family training for the VLM agents: advantages and the clipped policy loss as pure tensor functions
(:mod:`agents.vlm.grpo.loss`), with TRL's names and defaults."""
