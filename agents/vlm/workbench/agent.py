"""VLM policies as benchmark agents, and the policy specs of the command line.

``load_policy(spec)`` reads the specs ``visrl eval`` and ``visrl serve`` take:

- ``tiny`` or ``tiny:SEED``: the random offline model (tests, smoke runs);
- ``hf:PATH``: a local transformers model directory (Qwen2/2.5/3-VL class);
- ``openai:MODEL@URL``: any OpenAI-compatible server (vLLM, SGLang, ``visrl serve``, a hosted API;
  the key comes from ``OPENAI_API_KEY``).

:class:`VlmAgent` is the :class:`agents.base.Agent` of a policy: it keeps the conversation of one
episode and answers one observation at a time, so it plugs into the benchmark runner beside the
scripted and SB3 agents. Batched evaluation goes through :mod:`agents.vlm.rollout` instead
(``visrl eval``), which generates for all episodes of a batch at once.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agents.vlm.policies.policy import ChatPolicy, ChatRequest, Message, Sampling
from agents.vlm.rollout.chat import ChatFormatter, assistant_message

POLICY_SPECS = "tiny[:SEED] | hf:PATH | openai:MODEL@URL"


def load_policy(spec: str) -> ChatPolicy:
    """The policy named by ``spec`` (see the module doc); ``ValueError`` with the accepted forms otherwise."""
    kind, _, rest = spec.partition(":")
    if kind == "tiny":
        from agents.vlm.policies.hf import HFPolicy

        if rest and not rest.isdigit():
            raise ValueError(f"tiny takes an integer seed (tiny:0), got {spec!r}")
        return HFPolicy.tiny(seed=int(rest or 0))
    if kind == "hf" and rest:
        from agents.vlm.policies.hf import HFPolicy

        return HFPolicy.from_pretrained(rest)
    if kind == "openai":
        from agents.vlm.policies.openai_policy import OpenAIPolicy, parse_openai_spec

        model, url = parse_openai_spec(spec)
        return OpenAIPolicy(model, url)
    raise ValueError(f"unknown policy {spec!r}; use {POLICY_SPECS}")


class VlmAgent:
    """A chat policy acting in one text-interface env at a time (the benchmark runner's protocol)."""

    def __init__(
        self, policy: ChatPolicy, sampling: Sampling | None = None, formatter: ChatFormatter | None = None
    ) -> None:
        self.policy = policy
        self.name = f"vlm:{policy.name}"
        self.sampling = sampling or Sampling(temperature=0)
        self.formatter = formatter or ChatFormatter()
        self._messages: list[Message] = []
        self._tools: list[dict[str, Any]] | None = None
        self._last_action: str | None = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        if getattr(env.unwrapped, "action_mode", "text") != "text":
            raise ValueError(f"{self.name} acts on the text interface; make the env with action_mode='text'")
        self._messages, self._tools, self._last_action = [], None, None

    def act(self, observation: dict[str, Any], info: dict[str, Any]) -> str:
        if not self._messages:
            spec = info["prompt_spec"]
            self._tools = self.formatter.tools(spec)
            self._messages = self.formatter.start(observation, spec)
        else:
            self._messages += [assistant_message(self._last_action or ""), self.formatter.feedback(observation)]
        reply = self.policy.reply([ChatRequest(list(self._messages), self._tools)], self.sampling)[0]
        self._last_action = reply.text
        return reply.text
