"""A :class:`~agents.vlm.policies.policy.ChatPolicy` backed by any OpenAI-compatible chat-completions server.

vLLM, SGLang, :mod:`agents.vlm.serving.server` or a hosted API: each conversation of a batch is one request
(at most ``concurrency`` in flight), with images as base64 data URLs and the tool schemas as
``tools=``. Token ids come back when the server honours vLLM's ``return_token_ids`` (asked for
until a server rejects the field), log-probabilities when it honours ``logprobs``. Structured
``tool_calls`` (what hosted APIs answer when given ``tools=``) are turned back into the
``<tool_call>{...}</tool_call>`` text the envs parse.

``reply`` is synchronous: requests run on an event loop owned by a background thread, so it works
from any thread, with or without a running loop of its own.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import threading
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from agents.vlm.policies.policy import ChatRequest, Message, Reply, Sampling
from visrl_envs.core.tools import tool_call_text

if TYPE_CHECKING:
    from openai import AsyncOpenAI

T = TypeVar("T")
_SPEC = re.compile(r"openai:(?P<model>\S+?)@(?P<url>https?://\S+)", re.I)


class PolicyError(RuntimeError):
    """A chat completion failed (after the retries): ``url`` and ``status`` (None: no HTTP answer)."""

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``"openai:MODEL@URL"`` as ``(MODEL, URL)``, e.g. ``openai:tiny@http://127.0.0.1:8000/v1``."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise ValueError(
            f"bad policy spec {spec!r}: expected openai:MODEL@URL, e.g. openai:tiny@http://127.0.0.1:8000/v1"
        )
    url = match["url"]
    if not urlsplit(url).hostname:
        raise ValueError(f"bad policy spec {spec!r}: the URL {url!r} has no host")
    return match["model"], url


def image_data_url(image: np.ndarray, image_format: str = "png") -> str:
    """A uint8 image (H, W), (H, W, 3) or (H, W, 4) as a base64 ``data:`` URL."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays, got {array.dtype}")
    picture = Image.fromarray(array)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        picture.convert("RGB").save(buffer, format="JPEG", quality=95)
    else:
        picture.save(buffer, format="PNG")
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def openai_messages(messages: Sequence[Message], image_format: str = "png") -> list[dict[str, Any]]:
    """Our messages in the OpenAI form: image parts as ``image_url`` data URLs, assistant turns as text."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            if message["role"] == "assistant":
                content = "".join(part.get("text", "") for part in content if part["type"] == "text")
            else:
                content = [
                    {"type": "image_url", "image_url": {"url": image_data_url(part["image"], image_format)}}
                    if part["type"] == "image"
                    else {"type": "text", "text": part["text"]}
                    for part in content
                ]
        converted.append({"role": message["role"], "content": content})
    return converted


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def message_text(message: Any) -> str:
    """The text of an assistant message (an openai object or a dict): its content, then each structured
    tool call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. Arguments that are not a
    JSON object stay the raw string, so the env's parser reports them to the model."""
    text = _field(message, "content") or ""
    calls = _field(message, "tool_calls") or []
    if not text and not calls:
        text = _field(message, "refusal") or ""
    for call in calls:
        function = _field(call, "function")
        arguments = _field(function, "arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = arguments
        text += tool_call_text(str(_field(function, "name")), parsed if parsed is not None else {})
    return str(text)


def _token_ids(choice: Any) -> list[int] | None:
    ids = _field(choice, "token_ids")
    if ids is None and not isinstance(choice, dict):
        ids = (getattr(choice, "model_extra", None) or {}).get("token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
        return ids
    return None


def reply_of(response: Any) -> Reply:
    """A :class:`Reply` from a chat completion's first choice (an openai object or a dict)."""
    choice = _field(response, "choices")[0]
    logprobs = None
    content = _field(_field(choice, "logprobs"), "content")
    if content is not None:
        logprobs = [float(_field(item, "logprob")) for item in content]
    usage = _field(response, "usage")
    counts = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = _field(usage, key) if usage is not None else None
        if isinstance(value, int):
            counts[key] = value
    return Reply(
        text=message_text(_field(choice, "message")),
        ids=_token_ids(choice),
        logprobs=logprobs,
        finished=_field(choice, "finish_reason") != "length",
        usage=counts,
    )


class _LoopThread:
    """An event loop running in a daemon thread; :meth:`run` blocks the caller until a coroutine ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="visrl-openai-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class OpenAIPolicy:
    """Answers conversations through an OpenAI-compatible server at ``base_url`` (ending in ``/v1``).

    ``api_key`` defaults to ``$OPENAI_API_KEY``, else ``"EMPTY"`` (what local servers take).
    ``concurrency`` bounds the requests in flight (over all threads calling :meth:`reply`); the
    openai client retries 408/409/429/5xx and connection errors ``max_retries`` times with
    exponential backoff, each attempt bounded by ``timeout`` seconds. ``request_logprobs=False``
    suits hosted models that refuse ``logprobs``. A seeded :class:`Sampling` sends ``seed + i`` for
    the ``i``-th conversation, so equal prompts in a batch still get different samples.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120,
        max_retries: int = 3,
        request_logprobs: bool = True,
        image_format: str = "png",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{model}"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.request_logprobs = request_logprobs
        self.image_format = image_format
        self.request_token_ids = True  # turned off when a server rejects the field
        self._loop: _LoopThread | None = None
        self._client: AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def params(self, request: ChatRequest, sampling: Sampling, index: int = 0) -> dict[str, Any]:
        """The chat-completions body of one conversation (without ``return_token_ids``)."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(request.messages, self.image_format),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
        }
        if request.tools:
            params["tools"] = list(request.tools)
        if sampling.seed is not None:
            params["seed"] = (sampling.seed + index) % 2**63
        if self.request_logprobs:
            params["logprobs"] = True
        if sampling.top_k:
            params["extra_body"] = {"top_k": sampling.top_k}
        return params

    def reply(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]:
        """Answer each conversation (one request each, ``concurrency`` at a time); :class:`PolicyError`
        when one fails after its retries (the others are then cancelled)."""
        if not requests:
            return []
        bodies = [self.params(request, sampling, i) for i, request in enumerate(requests)]
        with self._lock:
            if self._loop is None:
                self._loop = _LoopThread()
            loop = self._loop
        return loop.run(self._reply_all(bodies))

    async def _reply_all(self, bodies: list[dict[str, Any]]) -> list[Reply]:
        tasks = [asyncio.ensure_future(self._complete(body)) for body in bodies]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    def _client_now(self) -> AsyncOpenAI:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=self.max_retries
            )
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._client

    async def _complete(self, body: dict[str, Any]) -> Reply:
        import openai

        client = self._client_now()
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                while True:
                    asked_ids = self.request_token_ids
                    params = dict(body)
                    if asked_ids:
                        params["extra_body"] = {**params.get("extra_body", {}), "return_token_ids": True}
                    try:
                        response = await client.chat.completions.create(**params)
                    except openai.BadRequestError as err:
                        if asked_ids and "return_token_ids" in str(err):
                            self.request_token_ids = False  # a server that refuses unknown fields
                            continue
                        raise
                    break
            except openai.APIStatusError as err:
                raise PolicyError(
                    f"chat completion at {self.endpoint} failed with HTTP {err.status_code}"
                    f"{' after ' + str(self.max_retries) + ' retries' if _retried(err.status_code) else ''}: "
                    f"{_error_message(err)}",
                    self.endpoint,
                    err.status_code,
                ) from None
            except openai.APITimeoutError:
                raise PolicyError(
                    f"chat completion at {self.endpoint} timed out ({self.timeout} s per attempt, "
                    f"{self.max_retries} retries)",
                    self.endpoint,
                ) from None
            except openai.APIConnectionError as err:
                cause = err.__cause__ or err
                raise PolicyError(
                    f"could not reach {self.endpoint} ({self.max_retries} retries): {type(cause).__name__}: {cause}",
                    self.endpoint,
                ) from None
        try:
            return reply_of(response)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
            raise PolicyError(
                f"malformed chat completion from {self.endpoint}: {type(err).__name__}: {err}", self.endpoint, 200
            ) from None

    def close(self) -> None:
        """Close the HTTP client and stop the loop thread (a later :meth:`reply` starts them again)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        client, self._client = self._client, None
        if client is not None:
            loop.run(client.close())
        loop.close()

    def __enter__(self) -> OpenAIPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retried(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _error_message(err: Any) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    return str(err.message)[:500]
