"""Token-level generation on a separate server, with weights pushed from the trainer: the client.

RL needs what the OpenAI chat API cannot give: generation that continues *exact* ids (a multi-turn
history is never re-tokenised) and a way to load the trainer's new weights after each update. A
:class:`~agents.vlm.serving.server.PolicyServer` serving a transformers policy has two more routes for that,
``/visrl/v1/generate`` and ``/visrl/v1/weights`` (their bodies: :mod:`agents.vlm.serving.protocol`).

:class:`RemotePolicy` is the client: a :class:`~agents.vlm.policies.policy.TokenPolicy` whose codec runs
locally (the trainer's own processor, so ids are the trainer's) and whose ``generate`` runs on the
server. The trainer uses it with ``generation_server: URL`` and pushes its trainable weights after
every update (:meth:`RemotePolicy.push_weights`); ``logprob_gap`` in its logs shows whether the server
samples from the policy being trained. Same process or another machine: only the URL changes.

Why not vLLM's server: its weight sync (TRL's ``vllm-serve``) goes through NCCL between GPUs, which
this CPU-only project cannot run or test; this route is the same protocol over HTTP, exercised in
``tests/test_vlm_remote.py``. Shipping weights over HTTP costs one copy of the trainable weights per
step (bf16 Qwen2.5-VL-3B: ~7.5 GB; LoRA adapters are not supported here yet).
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.vlm.policies.openai_policy import PolicyError, image_data_url
from agents.vlm.policies.policy import ChatRequest, Completion, Reply, Sampling, TokenPrompt, reply_by_tokens
from agents.vlm.serving.protocol import GENERATE_ROUTE, WEIGHTS_ROUTE

# -- the client --------------------------------------------------------------------------------------


class RemotePolicy:
    """A :class:`~agents.vlm.policies.policy.TokenPolicy` generating on a :class:`~agents.vlm.serving.server.PolicyServer`.

    ``url``: the server's base (``http://host:port``, a trailing ``/v1`` is accepted). ``processor``:
    the same processor (tokenizer and chat template) as the served model; the codec runs here.
    ``timeout`` bounds one HTTP call (seconds). Scoring (:meth:`token_logprobs`) is the trainer's job:
    it is not offered remotely."""

    def __init__(
        self, url: str, processor: Any, *, api_key: str | None = None, timeout: float = 600.0, name: str = "remote"
    ) -> None:
        from agents.vlm.policies.codec import ProcessorCodec

        base = url.rstrip("/")
        self.url = base[: -len("/v1")] if base.endswith("/v1") else base
        self.processor = processor
        self.codec = ProcessorCodec(processor)
        self.api_key = api_key
        self.timeout = timeout
        self.name = name
        self.weights_version = 0

    def _post(self, route: str, data: bytes, content_type: str) -> dict[str, Any]:
        headers = {"Content-Type": content_type}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + route, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload: dict[str, Any] = json.loads(response.read())
                return payload
        except urllib.error.HTTPError as err:
            detail = err.read(65536).decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):  # our servers answer {"error": {...}}
                detail = json.loads(detail)["error"]["message"]
            raise PolicyError(f"{route} answered {err.code}: {detail[:500]}", self.url, err.code) from None
        except (urllib.error.URLError, OSError) as err:
            raise PolicyError(f"cannot reach {self.url}{route}: {err}", self.url) from None

    def generate(self, prompts: Sequence[TokenPrompt], sampling: Sampling) -> list[Completion]:
        body = {
            "prompts": [{"ids": list(p.ids), "images": [image_data_url(image) for image in p.images]} for p in prompts],
            "sampling": {
                "temperature": sampling.temperature,
                "max_new_tokens": sampling.max_new_tokens,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k,
                "seed": sampling.seed,
            },
        }
        answer = self._post(GENERATE_ROUTE, json.dumps(body).encode(), "application/json")
        completions = answer.get("completions")
        if not isinstance(completions, list) or len(completions) != len(prompts):
            raise PolicyError(f"{GENERATE_ROUTE} gave a malformed answer", self.url)
        self.weights_version = int(answer.get("weights_version", 0))
        return [Completion(list(c["ids"]), list(c["logprobs"]), bool(c["finished"])) for c in completions]

    def push_weights(self, tensors: Mapping[str, Any]) -> int:
        """Send ``{name: tensor}`` (e.g. the trainable parameters) to the server; returns its new weights version."""
        from safetensors.torch import save as save_safetensors

        data = save_safetensors({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()})
        answer = self._post(WEIGHTS_ROUTE, data, "application/octet-stream")
        self.weights_version = int(answer["weights_version"])
        return self.weights_version

    def token_logprobs(self, sequences: Sequence[TokenPrompt], temperature: float = 1.0) -> list[np.ndarray]:
        raise NotImplementedError("a RemotePolicy only generates; score sequences with the trainer's HFPolicy")

    def reply(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]:
        return reply_by_tokens(self, requests, sampling)

    def close(self) -> None:
        pass
