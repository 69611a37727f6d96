"""The wire protocol of ``visrl serve``: what its server and its clients share.

:mod:`agents.vlm.serving.server` answers these requests and :class:`~agents.vlm.serving.client.RemotePolicy` sends
the token-level ones; both import this module and nothing of each other. Here: the route
names, the bounds of a request (:class:`Limits`), the OpenAI-style error (:class:`ApiError`), the
decoding of ``data:`` image URLs, and the bodies of the two token-level routes:

- ``POST /visrl/v1/generate``: ``{"prompts": [{"ids": [...], "images": ["data:image/png;base64,..."]}],
  "sampling": {"temperature", "max_new_tokens", "top_p", "top_k", "seed"}}`` ->
  ``{"completions": [{"ids", "logprobs", "finished"}], "weights_version": k}``
  (:func:`parse_token_request`, :func:`completions_body`);
- ``POST /visrl/v1/weights`` (only when the server was started with ``allow_weight_updates``): a
  safetensors file as the body; every tensor must name a parameter or buffer of the served model and
  have its shape; all are checked before any is loaded, then copied in (cast to the served dtype).

Non-finite log-probabilities are sent as :data:`FLOOR_LOGPROB` (-9999.0, as vLLM does: JSON has no
infinities).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.vlm.policies.policy import Completion, Sampling, TokenPrompt

GENERATE_ROUTE = "/visrl/v1/generate"
WEIGHTS_ROUTE = "/visrl/v1/weights"

#: Image formats a data URL may carry (PIL decodes only these).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
#: What a non-finite log-probability is sent as (JSON has no infinities).
FLOOR_LOGPROB = -9999.0
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*?);base64,(?P<data>.*)", re.S | re.I)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask (the server is reachable by any local process)."""

    max_body_bytes: int = 64 * 2**20
    max_n: int = 16
    max_tokens: int = 4096
    default_max_tokens: int = 256
    max_messages: int = 512
    max_tools: int = 128
    max_images: int = 64
    max_image_pixels: int = 4096 * 4096
    max_total_pixels: int = 32 * 2**20
    max_queued: int = 256  # conversations waiting for the policy, over all requests
    max_prompts: int = 256  # token route: prompts per request
    max_prompt_tokens: int = 65536  # token route: ids per prompt
    max_weights_bytes: int = 64 * 2**30  # weights route: one safetensors body


class ApiError(Exception):
    """An error answered as an OpenAI-style ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


# -- images ------------------------------------------------------------------------------------


@dataclass
class ImageBudget:
    limits: Limits
    count: int = 0
    pixels: int = 0


def decode_data_url(url: str, budget: ImageBudget | None = None, param: str = "image_url") -> np.ndarray:
    """The uint8 RGB array (H, W, 3) of a base64 ``data:`` image URL; :class:`ApiError` otherwise."""
    from PIL import Image

    if url.lstrip()[:5].lower() != "data:":
        shown = url[:60] + ("..." if len(url) > 60 else "")
        raise bad_request(
            f"only data: image URLs (base64) are accepted, got {shown!r}: this server never fetches URLs",
            param,
            "unsupported_url",
        )
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise bad_request("malformed data URL: expected data:image/<format>;base64,<data>", param)
    mime = (match["mime"] or "").lower()
    if mime and not mime.startswith("image/"):
        raise bad_request(f"the data URL's media type must be image/*, got {mime!r}", param)
    try:
        raw = base64.b64decode(re.sub(r"\s+", "", match["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the data URL's base64 payload does not decode", param) from None
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            limits = budget.limits if budget else Limits()
            if width < 1 or height < 1 or width * height > limits.max_image_pixels:
                raise bad_request(f"image of {width}x{height} px: at most {limits.max_image_pixels} pixels", param)
            if budget is not None:
                budget.count += 1
                budget.pixels += width * height
                if budget.count > limits.max_images:
                    raise bad_request(f"at most {limits.max_images} images per request", param)
                if budget.pixels > limits.max_total_pixels:
                    raise bad_request(f"at most {limits.max_total_pixels} image pixels per request", param)
            image.seek(0)
            array = np.array(image.convert("RGB"), dtype=np.uint8)
    except ApiError:
        raise
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, DecompressionBombError)
        raise bad_request(
            f"the image does not decode as {'/'.join(IMAGE_FORMATS)}: {type(err).__name__}", param
        ) from None
    return array


# -- the token routes ----------------------------------------------------------------------------


class RequestError(ValueError):
    """A token-level request the server refuses (answered as HTTP 400 with this message)."""


@dataclass(frozen=True)
class TokenRequest:
    prompts: list[TokenPrompt]
    sampling: Sampling


def parse_token_request(body: Any, vocabulary: int, limits: Limits) -> TokenRequest:
    """Validate a ``/visrl/v1/generate`` body: ids within the vocabulary, images as bounded data URLs."""
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
    budget = ImageBudget(limits)
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
        except ApiError as err:  # the same message, the token routes' status
            raise RequestError(err.message) from None
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


def wire_logprob(value: float) -> float:
    """A log-probability as sent: itself when finite, :data:`FLOOR_LOGPROB` otherwise."""
    return float(value) if math.isfinite(value) else FLOOR_LOGPROB


def completions_body(completions: Sequence[Completion], weights_version: int) -> dict[str, Any]:
    return {
        "completions": [
            {
                "ids": [int(i) for i in c.ids],
                "logprobs": [wire_logprob(v) for v in c.logprobs],
                "finished": bool(c.finished),
            }
            for c in completions
        ],
        "weights_version": weights_version,
    }
