"""The workbench: what a user runs on top of policies and rollouts, and what it leaves behind.

- ``evaluate.py``: ``visrl eval``, a policy over one env or all, batched, with bootstrap CIs.
- ``demos.py``: ``visrl demos``, oracle episodes as chat SFT data, and :class:`DemoCollator` for TRL.
- ``store.py``: trajectories to and from a run directory (JSONL + PNG), transcripts.
- ``viewer.py``: ``visrl view``, the HTML viewer of a saved run.
- ``agent.py``: :func:`load_policy` (the ``tiny`` / ``hf:PATH`` / ``openai:MODEL@URL`` specs) and
  :class:`VlmAgent`, a policy as the benchmark runner's Agent.

Not called "tools": in this project a tool is what an env offers the model (``ToolSet``, the chat
template's ``tools=``). This room imports :mod:`agents.vlm.policies` and :mod:`agents.vlm.rollout`.
"""
