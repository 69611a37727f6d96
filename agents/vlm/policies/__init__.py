"""Policies: what answers a conversation, and for RL, what continues exact token ids.

- ``policy.py``: the protocols (:class:`ChatPolicy`, :class:`TokenPolicy`) and their data (Sampling,
  ChatRequest, Reply, TokenPrompt, Completion); everything else in agents/vlm sees a model through them.
- ``hf.py``: :class:`HFPolicy`, a transformers Qwen-VL-class model in this process (both levels);
  ``codec.py`` (chat turns as exact ids), ``prefix_cache.py`` (key/value states kept between calls),
  ``logprobs.py`` (the log-probabilities the policy records and the trainer recomputes).
- ``tiny.py``: the tiny random model, built in code (tests and CI download nothing).
- ``openai_policy.py``: :class:`OpenAIPolicy`, any OpenAI-compatible server (chat level).

The token-level client of visrl's own server, ``RemotePolicy``, lives beside that server in
:mod:`agents.vlm.serving` (they share its wire protocol). This room imports no other room of agents/vlm.
"""
