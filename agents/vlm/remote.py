"""Token-level generation on a separate server, with weights pushed from the trainer.

RL needs what the OpenAI chat API cannot give: generation that continues *exact* ids (a multi-turn
history is never re-tokenised) and a way to load the trainer's new weights after each update. A
:class:`~agents.vlm.serve.PolicyServer` serving a transformers policy has two more routes for that:

- ``POST /visrl/v1/generate``: ``{"prompts": [{"ids": [...], "images": ["data:image/png;base64,..."]}],
  "sampling": {"temperature", "max_new_tokens", "top_p", "top_k", "seed"}}`` ->
  ``{"completions": [{"ids", "logprobs", "finished"}], "weights_version": k}``;
- ``POST /visrl/v1/weights`` (only when the server was started with ``allow_weight_updates``): a
  safetensors file as the body; every tensor must name a parameter or buffer of the served model and
  have its shape; all are checked before any is loaded, then copied in (cast to the served dtype).

:class:`RemotePolicy` is the client: a :class:`~agents.vlm.policy.TokenPolicy` whose codec runs
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.vlm.openai_policy import PolicyError, image_data_url
from agents.vlm.policy import ChatRequest, Completion, Reply, Sampling, TokenPrompt, reply_by_tokens

if TYPE_CHECKING:
    from agents.vlm.serve import Limits

GENERATE_ROUTE = "/visrl/v1/generate"
WEIGHTS_ROUTE = "/visrl/v1/weights"


class RequestError(ValueError):
    """A token-level request the server refuses (answered as HTTP 400 with this message)."""


# -- the server side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    prompts: list[TokenPrompt]
    sampling: Sampling


def parse_token_request(body: Any, vocabulary: int, limits: Limits) -> TokenRequest:
    """Validate a ``/visrl/v1/generate`` body: ids within the vocabulary, images as bounded data URLs."""
    from agents.vlm.serve import _ImageBudget, decode_data_url

    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(body) - {"prompts", "sampling"})
    if unknown:
        raise RequestError(f"unknown fields {unknown}")
    prompts = body.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise RequestError("prompts must be a non-empty list")
    if len(prompts) > limits.max_prompts:
        raise RequestError(f"{len(prompts)} prompts: at most {limits.max_prompts} per request")
    budget = _ImageBudget(limits)
    parsed = []
    for k, prompt in enumerate(prompts):
        if not isinstance(prompt, dict) or set(prompt) - {"ids", "images"}:
            raise RequestError(f"prompts[{k}] must be an object with ids and images")
        ids = prompt.get("ids")
        if not isinstance(ids, list) or not ids or not all(type(i) is int for i in ids):
            raise RequestError(f"prompts[{k}].ids must be a non-empty list of integers")
        if len(ids) > limits.max_prompt_tokens:
            raise RequestError(f"prompts[{k}] has {len(ids)} ids: at most {limits.max_prompt_tokens}")
        if min(ids) < 0 or max(ids) >= vocabulary:
            raise RequestError(f"prompts[{k}].ids must lie in [0, {vocabulary})")
        images = prompt.get("images", [])
        if not isinstance(images, list) or not all(isinstance(url, str) for url in images):
            raise RequestError(f"prompts[{k}].images must be a list of data URLs")
        try:
            pixels = [decode_data_url(url, budget, f"prompts[{k}].images") for url in images]
        except Exception as err:  # ApiError from the shared decoder: same message, token-route status
            raise RequestError(str(err)) from None
        parsed.append(TokenPrompt(list(ids), pixels))
    sampling = body.get("sampling", {})
    if not isinstance(sampling, dict) or set(sampling) - {"temperature", "max_new_tokens", "top_p", "top_k", "seed"}:
        raise RequestError("sampling takes temperature, max_new_tokens, top_p, top_k and seed")
    max_new = sampling.get("max_new_tokens", limits.default_max_tokens)
    if type(max_new) is not int or not 1 <= max_new <= limits.max_tokens:
        raise RequestError(f"max_new_tokens must be an integer in [1, {limits.max_tokens}]")
    seed = sampling.get("seed")
    if seed is not None and (type(seed) is not int or seed < 0):
        raise RequestError("seed must be a non-negative integer")
    try:
        chosen = Sampling(
            temperature=float(sampling.get("temperature", 1.0)),
            max_new_tokens=max_new,
            top_p=float(sampling.get("top_p", 1.0)),
            top_k=int(sampling.get("top_k", 0)),
            seed=seed,
        )
    except (TypeError, ValueError) as err:
        raise RequestError(str(err)) from None
    return TokenRequest(parsed, chosen)


def completions_body(completions: Sequence[Completion], weights_version: int) -> dict[str, Any]:
    from agents.vlm.serve import FLOOR_LOGPROB

    return {
        "completions": [
            {
                "ids": [int(i) for i in c.ids],
                "logprobs": [float(v) if np.isfinite(v) else FLOOR_LOGPROB for v in c.logprobs],
                "finished": bool(c.finished),
            }
            for c in completions
        ],
        "weights_version": weights_version,
    }


def load_weights(model: Any, data: bytes) -> int:
    """Copy the tensors of the safetensors file ``data`` into ``model`` (names and shapes checked
    first, nothing loaded on a mismatch); returns how many were loaded."""
    import torch
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(data)
    except Exception as err:  # safetensors raises its own error types on malformed headers
        raise RequestError(f"the body is not a safetensors file: {str(err)[:200]}") from None
    if not tensors:
        raise RequestError("the safetensors file holds no tensors")
    targets = model.state_dict(keep_vars=True)
    unknown = sorted(set(tensors) - set(targets))
    if unknown:
        raise RequestError(f"{len(unknown)} tensors are not in the served model, e.g. {unknown[:3]}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(targets[name].shape):
            raise RequestError(
                f"{name}: shape {tuple(tensor.shape)}, the served model has {tuple(targets[name].shape)}"
            )
        if not torch.isfinite(tensor.float()).all():
            raise RequestError(f"{name} holds NaN or infinite values")
    with torch.no_grad():
        for name, tensor in tensors.items():
            targets[name].copy_(tensor.to(targets[name].device))
    return len(tensors)


# -- the client --------------------------------------------------------------------------------------


class RemotePolicy:
    """A :class:`~agents.vlm.policy.TokenPolicy` generating on a :class:`~agents.vlm.serve.PolicyServer`.

    ``url``: the server's base (``http://host:port``, a trailing ``/v1`` is accepted). ``processor``:
    the same processor (tokenizer and chat template) as the served model; the codec runs here.
    ``timeout`` bounds one HTTP call (seconds). Scoring (:meth:`token_logprobs`) is the trainer's job:
    it is not offered remotely."""

    def __init__(
        self, url: str, processor: Any, *, api_key: str | None = None, timeout: float = 600.0, name: str = "remote"
    ) -> None:
        from agents.vlm.codec import ProcessorCodec

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
