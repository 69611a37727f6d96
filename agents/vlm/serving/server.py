"""An OpenAI-compatible chat-completions server for any :class:`~agents.vlm.policies.policy.ChatPolicy`.

Serve a local model (the in-process transformers policy, or the tiny test model) without vLLM::

    with PolicyServer(policy, "tiny") as server:   # 127.0.0.1, an ephemeral port
        client = openai.OpenAI(base_url=server.url, api_key="EMPTY")

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

What the completions endpoint takes (anything else in the body is ignored):

- ``model`` (must name the served model), ``messages`` (``system``/``developer``/``user``/
  ``assistant``/``tool``; string content or ``text`` and ``image_url`` parts; assistant
  ``tool_calls`` become ``<tool_call>`` text), ``tools``;
- ``temperature``, ``top_p``, ``top_k`` (vLLM's extension), ``max_tokens`` or
  ``max_completion_tokens``, ``n``, ``seed``;
- ``logprobs`` and ``top_logprobs`` (0 only: alternatives are not computed, a larger value is a 400),
  and vLLM's ``return_token_ids`` (each choice then carries the generated ``token_ids``).
- ``stop`` is checked and ignored (the policy stops at its end-of-turn token); so are ``stream``
  when false (true is a 400), ``tool_choice``, penalties and ``response_format``.

Images must be ``data:`` URLs (base64 PNG, JPEG, WebP, GIF or BMP): the server never fetches a URL.
Log-probabilities are those the policy reports (see :mod:`agents.vlm.policies.policy`); non-finite values are
sent as -9999.0, as vLLM does. The choice's ``content`` is the policy's text: tool calls stay in it as
``<tool_call>`` text (no ``tool_calls`` parsing).

The server is reachable by any local process, so every input is bounded (:class:`Limits`): body size
(413), ``n``, ``max_tokens``, messages, tools, image count and pixels, and queued conversations (429).
Concurrent requests are batched: requests arriving within ``batch_window`` seconds with the same
sampling parameters go to one ``policy.reply`` call (seeded requests are never batched with others,
so a seed gives the same answer alone or under load). The policy is only ever called from one thread.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from agents.vlm.policies.policy import ChatPolicy, ChatRequest, Message, Reply, Sampling, TokenPolicy
from agents.vlm.serving.protocol import (
    GENERATE_ROUTE,
    WEIGHTS_ROUTE,
    ApiError,
    ImageBudget,
    Limits,
    RequestError,
    bad_request,
    completions_body,
    decode_data_url,
    parse_token_request,
    wire_logprob,
)
from visrl_envs.core.tools import tool_call_text

log = logging.getLogger(__name__)

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


# -- request parsing ----------------------------------------------------------------------------


@dataclass
class ParsedRequest:
    """A validated chat-completions request."""

    request: ChatRequest
    sampling: Sampling
    n: int
    logprobs: bool
    return_token_ids: bool


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(part["text"] for part in parts if part["type"] == "text")


def _parse_content(content: Any, where: str, budget: ImageBudget) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{at}.text must be a string", at)
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise bad_request(f"{at}.image_url.url must be a string", at)
            parts.append({"type": "image", "image": decode_data_url(url, budget, f"{at}.image_url")})
        else:
            raise bad_request(f"{at}: content parts must be {{'type': 'text'}} or {{'type': 'image_url'}}", at)
    return parts


def _tool_calls_as_text(calls: Any, where: str) -> str:
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    texts = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise bad_request(f"{where}.tool_calls[{j}] needs function.name", f"{where}.tool_calls")
        arguments = function.get("arguments", "{}") if isinstance(function, dict) else "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = arguments
        texts.append(tool_call_text(name, parsed))
    return "".join(texts)


def parse_messages(raw: Any, limits: Limits) -> list[Message]:
    """OpenAI chat messages as the policy's messages (image parts carry uint8 RGB arrays)."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list", "messages")
    if len(raw) > limits.max_messages:
        raise bad_request(f"at most {limits.max_messages} messages", "messages")
    budget = ImageBudget(limits)
    messages: list[Message] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", where)
        role = _ROLES.get(str(message.get("role")))
        if role is None:
            raise bad_request(f"{where}.role must be one of {sorted(_ROLES)}", f"{where}.role")
        content = message.get("content")
        calls = message.get("tool_calls")
        if content is None and role == "assistant":
            content = ""
        content = _parse_content(content, where, budget)
        if role != "user" and isinstance(content, list):
            if any(part["type"] == "image" for part in content):
                raise bad_request(f"{where}: only user messages may hold images", where)
            content = _text_of(content)
        if calls and role == "assistant":
            assert isinstance(content, str)
            content += _tool_calls_as_text(calls, where)
        messages.append({"role": role, "content": content})
    return messages


def _int(body: dict[str, Any], key: str, low: int, high: int, default: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if type(value) is not int or not low <= value <= high:
        raise bad_request(f"{key} must be an integer in [{low}, {high}], got {value!r}", key)
    return value


def _float(body: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise bad_request(f"{key} must be a number in [{low}, {high}], got {value!r}", key)
    return float(value)


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be a boolean, got {value!r}", key)
    return value


def parse_request(body: Any, model_name: str, limits: Limits) -> ParsedRequest:
    """Validate a chat-completions body; :class:`ApiError` (400/404) names the first bad field."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad_request("model must be a string", "model")
    if model != model_name:
        raise ApiError(
            404,
            f"model {model!r} is not served here; this server serves {model_name!r}",
            code="model_not_found",
            param="model",
        )
    if body.get("stream"):
        raise bad_request("streaming is not supported: send stream=false", "stream", "unsupported_parameter")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise bad_request("tools must be a list of objects", "tools")
        if len(tools) > limits.max_tools:
            raise bad_request(f"at most {limits.max_tools} tools", "tools")
        tools = tools or None
    stop = body.get("stop")
    if not (
        stop is None or isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise bad_request("stop must be a string or a list of strings", "stop")
    top_logprobs = _int(body, "top_logprobs", 0, 20, 0)
    if top_logprobs:
        raise bad_request(
            "top_logprobs > 0 is not supported: only the sampled tokens' logprobs are returned",
            "top_logprobs",
            "unsupported_parameter",
        )
    max_tokens = _int(body, "max_completion_tokens", 1, limits.max_tokens, None)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, limits.max_tokens, limits.default_max_tokens)
    top_k = _int(body, "top_k", -1, 2**31 - 1, 0)
    assert max_tokens is not None and top_k is not None
    sampling = Sampling(
        temperature=_float(body, "temperature", 0.0, 2.0, 1.0),
        max_new_tokens=max_tokens,
        top_p=_float(body, "top_p", 1e-9, 1.0, 1.0),
        top_k=max(top_k, 0),
        seed=_int(body, "seed", 0, 2**63 - 1, None),
    )
    n = _int(body, "n", 1, limits.max_n, 1)
    assert n is not None
    messages = parse_messages(body.get("messages"), limits)
    return ParsedRequest(
        ChatRequest(messages, tools), sampling, n, _bool(body, "logprobs"), _bool(body, "return_token_ids")
    )


# -- batching -----------------------------------------------------------------------------------


@dataclass
class _Job:
    requests: list[ChatRequest]
    sampling: Sampling
    key: Hashable
    done: threading.Event = field(default_factory=threading.Event)
    replies: list[Reply] | None = None
    error: ApiError | None = None


class Batcher:
    """One thread that calls the policy: jobs queued within ``window`` seconds (and with the same
    key) share one ``policy.reply`` call of at most about ``max_batch`` conversations."""

    def __init__(
        self,
        policy: ChatPolicy,
        window: float,
        max_batch: int,
        max_queued: int,
        model_lock: threading.Lock | None = None,
    ) -> None:
        self.policy = policy
        self.model_lock = model_lock or threading.Lock()
        self.window = window
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.calls = 0
        self.largest_call = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="visrl-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, requests: list[ChatRequest], sampling: Sampling, key: Hashable) -> list[Reply]:
        """Queue a job and wait for its replies (blocking)."""
        job = _Job(requests, sampling, key)
        with self._lock:  # queued under the lock: no job lands after the close sentinel
            if self._closed:
                raise ApiError(503, "the server is shutting down", type="server_error", code="unavailable")
            if self._queued + len(requests) > self.max_queued:
                raise ApiError(
                    429, "too many queued conversations: retry later", type="rate_limit_error", code="overloaded"
                )
            self._queued += len(requests)
            self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.replies is not None
        return job.replies

    def close(self) -> None:
        """Answer what is queued after the running call with 503 and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch, size = [first], len(first.requests)
            deadline = time.monotonic() + self.window
            closing = False
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:  # wait out the window, then take whatever is already queued
                    job = self._queue.get(remaining > 0, max(remaining, 0.0))
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                batch.append(job)
                size += len(job.requests)
            self._run(batch)
            if closing:
                break
        while True:  # only jobs queued before the sentinel can remain
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(
                    job, error=ApiError(503, "the server is shutting down", type="server_error", code="unavailable")
                )

    def _finish(self, job: _Job, replies: list[Reply] | None = None, error: ApiError | None = None) -> None:
        with self._lock:
            self._queued -= len(job.requests)
        job.replies, job.error = replies, error
        job.done.set()

    def _run(self, batch: list[_Job]) -> None:
        groups: dict[Hashable, list[_Job]] = {}
        for job in batch:
            groups.setdefault(job.key, []).append(job)
        for jobs in groups.values():
            requests = [r for job in jobs for r in job.requests]
            try:
                with self.model_lock:  # the token routes use the same model
                    replies = self.policy.reply(requests, jobs[0].sampling)
                if len(replies) != len(requests):
                    raise RuntimeError(f"the policy gave {len(replies)} replies to {len(requests)} conversations")
            except Exception as err:
                log.exception("policy.reply failed")
                error = ApiError(
                    500,
                    f"the policy failed: {type(err).__name__}: {str(err)[:500]}",
                    type="server_error",
                    code="policy_error",
                )
                for job in jobs:
                    self._finish(job, error=error)
                continue
            self.calls += 1
            self.largest_call = max(self.largest_call, len(requests))
            start = 0
            for job in jobs:
                self._finish(job, replies[start : start + len(job.requests)])
                start += len(job.requests)


# -- responses ----------------------------------------------------------------------------------


def token_texts(policy: ChatPolicy) -> Callable[[int], str]:
    """The text of one token id, from the policy's tokenizer or codec (``token_id:N`` without one)."""
    tokenizer = getattr(policy, "tokenizer", None)
    codec = getattr(policy, "codec", None)
    cache: dict[int, str] = {}

    def text(token: int) -> str:
        if token not in cache:
            if tokenizer is not None:
                cache[token] = str(tokenizer.decode([token]))
            elif codec is not None:
                cache[token] = str(codec.decode([token]))
            else:
                cache[token] = f"token_id:{token}"
        return cache[token]

    return text


def completion_body(
    model: str, parsed: ParsedRequest, replies: Sequence[Reply], token_text: Callable[[int], str]
) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` object of ``replies`` (one choice each)."""
    choices = []
    completion_tokens = 0
    for index, reply in enumerate(replies):
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": reply.text},
            "finish_reason": "stop" if reply.finished else "length",
            "logprobs": None,
        }
        if parsed.logprobs and reply.logprobs is not None:
            ids = reply.ids if reply.ids is not None and len(reply.ids) == len(reply.logprobs) else None
            content = []
            for k, logprob in enumerate(reply.logprobs):
                token = token_text(ids[k]) if ids is not None else ""
                content.append(
                    {
                        "token": token,
                        "logprob": wire_logprob(logprob),
                        "bytes": list(token.encode()),
                        "top_logprobs": [],
                    }
                )
            choice["logprobs"] = {"content": content}
        if parsed.return_token_ids:
            choice["token_ids"] = list(map(int, reply.ids)) if reply.ids is not None else None
        choices.append(choice)
        completion_tokens += int(reply.usage.get("completion_tokens", len(reply.ids) if reply.ids else 0))
    prompt_tokens = int(replies[0].usage.get("prompt_tokens", 0)) if replies else 0
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# -- HTTP ---------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: PolicyServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: OpenAI clients reuse connections
    server_version = "visrl-serve"
    timeout = 60  # seconds a socket may stay silent (idle keep-alive, slow bodies)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, allow_nan=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client left
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, huge headers, unknown method) as JSON bodies."""
        self.close_connection = True
        if code == 501:
            code, message = 405, f"method {self.command} is not allowed"
        self._error(ApiError(code, message or explain or "bad request", code="bad_request"))

    def _error(self, error: ApiError) -> None:
        headers = {"Retry-After": "1"} if error.status == 429 else None
        self._send(error.status, error.body(), headers)

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _authorized(self) -> bool:
        key = self.server.app.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    def do_GET(self) -> None:
        app = self.server.app
        path = self._path()
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif not self._authorized():
            self._error(ApiError(401, "missing or wrong API key", code="invalid_api_key"))
        elif path == "/v1/models":
            model = {"id": app.model_name, "object": "model", "created": app.created, "owned_by": "visrl"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._error(ApiError(404, f"no route GET {path}", code="not_found"))

    def do_POST(self) -> None:
        app = self.server.app
        if self._path() in (GENERATE_ROUTE, WEIGHTS_ROUTE):
            self._token_route(app)
            return
        try:
            if self._path() != "/v1/chat/completions":
                self.close_connection = True  # the body is left unread
                raise ApiError(404, f"no route POST {self._path()}", code="not_found")
            if not self._authorized():
                self.close_connection = True
                raise ApiError(401, "missing or wrong API key", code="invalid_api_key")
            body = self._read_json(app.limits.max_body_bytes)
            with app.tracking():
                parsed = parse_request(body, app.model_name, app.limits)
                key: Hashable = (parsed.sampling, uuid.uuid4().hex if parsed.sampling.seed is not None else None)
                replies = app.batcher.submit([parsed.request] * parsed.n, parsed.sampling, key)
                payload = completion_body(app.model_name, parsed, replies, app.token_text)
        except ApiError as error:
            self._error(error)
            return
        except Exception as err:  # never let a request kill the handler silently
            self._internal_error(err)
            return
        self._send(200, payload)

    def _internal_error(self, err: Exception) -> None:
        log.exception("request failed")
        self._error(ApiError(500, f"internal error: {type(err).__name__}", type="server_error", code="internal_error"))

    def _token_route(self, app: PolicyServer) -> None:
        """The token-level routes of :mod:`agents.vlm.serving.protocol` (generation on exact ids, weight updates)."""
        path = self._path()
        try:
            if not self._authorized():
                self.close_connection = True
                raise ApiError(401, "missing or wrong API key", code="invalid_api_key")
            if not isinstance(app.policy, TokenPolicy):
                self.close_connection = True
                raise ApiError(404, f"{path}: this server's policy has no token level", code="not_found")
            model = getattr(app.policy, "model", None)
            if path == WEIGHTS_ROUTE:
                if not app.allow_weight_updates or model is None:
                    self.close_connection = True
                    raise ApiError(403, "weight updates are off (start the server with them allowed)", code="forbidden")
                data = self._read_body(app.limits.max_weights_bytes)
                with app.batcher.model_lock:
                    loaded = load_weights(model, data)
                    app.weights_version += 1
                    payload: dict[str, Any] = {"updated": loaded, "weights_version": app.weights_version}
            else:
                body = self._read_json(app.limits.max_body_bytes)
                tokenizer = getattr(app.policy, "tokenizer", None)
                vocabulary = len(tokenizer) if tokenizer is not None else 2**31
                request = parse_token_request(body, vocabulary, app.limits)
                with app.tracking(), app.batcher.model_lock:
                    completions = app.policy.generate(request.prompts, request.sampling)
                    payload = completions_body(completions, app.weights_version)
        except ApiError as error:
            self._error(error)
            return
        except RequestError as err:
            self._error(bad_request(str(err)))
            return
        except ValueError as err:  # e.g. image pads that do not match the images
            self._error(bad_request(f"the policy refused the prompts: {str(err)[:300]}"))
            return
        except Exception as err:
            self._internal_error(err)
            return
        self._send(200, payload)

    def _read_body(self, cap: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "chunked bodies are not supported: send Content-Length", code="length_required")
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header or "")
        except ValueError:
            self.close_connection = True
            raise ApiError(411, "a Content-Length header is required", code="length_required") from None
        if length < 0:
            self.close_connection = True
            raise bad_request("bad Content-Length")
        if length > cap:
            self.close_connection = True
            raise ApiError(413, f"request body of {length} bytes: at most {cap}", code="request_too_large")
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise bad_request("the request body ended early")
        return bytes(data)

    def _read_json(self, cap: int) -> Any:
        data = self._read_body(cap)
        try:
            return json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise bad_request(f"the body is not valid JSON: {str(err)[:200]}", code="invalid_json") from None


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class PolicyServer:
    """Serves ``policy`` as ``model_name`` over the OpenAI chat-completions API, from a background thread.

    ``port=0`` takes a free port; :meth:`start` returns the base URL (``http://host:port/v1``, what
    OpenAI clients take as ``base_url``). ``api_key`` (optional) must then come as a Bearer token.
    ``batch_window`` seconds gather concurrent requests into one ``policy.reply`` call of at most
    about ``max_batch`` conversations. The server does not close the policy.

    A token-level policy (transformers) is also served on the routes of :mod:`agents.vlm.serving.protocol`:
    generation on exact ids, and with ``allow_weight_updates`` (off by default: whoever can post
    weights controls the model) weight updates from a trainer.

    Why the stdlib ``ThreadingHTTPServer``: one model behind a single batching thread needs no async
    framework, and the package then needs no web dependency; every input is bounded here instead.
    """

    def __init__(
        self,
        policy: ChatPolicy,
        model_name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        batch_window: float = 0.005,
        max_batch: int = 32,
        limits: Limits | None = None,
        allow_weight_updates: bool = False,
    ) -> None:
        if not model_name:
            raise ValueError("model_name must be non-empty")
        self.policy = policy
        self.model_name = model_name
        self.host = host
        self.port = port
        self.api_key = api_key
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.limits = limits or Limits()
        self.allow_weight_updates = allow_weight_updates
        self.weights_version = 0  #: how many weight updates the served model has taken
        self.created = int(time.time())
        self.token_text = token_texts(policy)
        self.in_flight = 0
        self.max_in_flight = 0
        self._count_lock = threading.Lock()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.batcher: Batcher

    @property
    def url(self) -> str:
        """The base URL of the OpenAI API (``.../v1``)."""
        if self._http is None:
            raise RuntimeError("the server is not started")
        host, port = self._http.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def start(self) -> str:
        """Bind, start serving from a daemon thread, and return :attr:`url`."""
        if self._http is not None:
            return self.url
        http = _HTTPServer((self.host, self.port), _Handler)
        http.app = self
        self.batcher = Batcher(self.policy, self.batch_window, self.max_batch, self.limits.max_queued, threading.Lock())
        self._http = http
        self._thread = threading.Thread(target=http.serve_forever, name="visrl-serve", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop accepting, answer queued requests with 503, and free the port."""
        if self._http is None:
            return
        self._http.shutdown()
        self.batcher.close()
        self._http.server_close()
        assert self._thread is not None
        self._thread.join()
        self._http = None

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tracking(self) -> _InFlight:
        """A context counting completion requests in flight (:attr:`max_in_flight` keeps the peak)."""
        return _InFlight(self)

    def stats(self) -> dict[str, int]:
        """Requests in flight now and at most, policy calls and the largest batch given to the policy."""
        batcher = getattr(self, "batcher", None)
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "policy_calls": batcher.calls if batcher else 0,
            "largest_call": batcher.largest_call if batcher else 0,
        }


class _InFlight:
    def __init__(self, server: PolicyServer) -> None:
        self.server = server

    def __enter__(self) -> None:
        with self.server._count_lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)

    def __exit__(self, *exc: object) -> None:
        with self.server._count_lock:
            self.server.in_flight -= 1


# -- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``visrl serve``."""
    parser.add_argument("--model", required=True, help="a local model directory, or 'tiny' (the random test model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    parser.add_argument(
        "--name", default=None, help="the model name clients send (default: 'tiny' or the directory name)"
    )
    parser.add_argument("--api-key", default=None, help="require this Bearer token (default: none)")
    parser.add_argument("--max-batch", type=int, default=32, help="most conversations per model call")
    parser.add_argument("--batch-window-ms", type=float, default=5.0, help="how long to gather concurrent requests")
    parser.add_argument(
        "--prefix-cache-gb",
        type=_non_negative,
        default=1.0,
        help="GiB of key/value states kept between calls, so a conversation's next turn encodes only what is new "
        "(0: off; default 1)",
    )
    parser.add_argument(
        "--allow-weight-updates",
        action="store_true",
        help="accept new weights on /visrl/v1/weights (a trainer's generation server; anyone who can post controls the model)",
    )


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def load_policy(model: str, prefix_cache_gb: float = 1.0) -> ChatPolicy:
    """The transformers policy of ``model`` (a local directory, or ``"tiny"``)."""
    from agents.vlm.policies.hf import HFPolicy

    cache = int(prefix_cache_gb * 2**30)
    policy: ChatPolicy = (
        HFPolicy.tiny(seed=0, prefix_cache_bytes=cache)
        if model == "tiny"
        else HFPolicy.from_pretrained(model, prefix_cache_bytes=cache)
    )
    return policy


def run(args: argparse.Namespace) -> int:
    """``visrl serve``: load the policy and serve it until Ctrl-C."""
    from pathlib import Path

    name = args.name or ("tiny" if args.model == "tiny" else Path(args.model).resolve().name)
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.api_key is None:
        log.warning("serving on %s without --api-key: anyone who reaches this address can use the model", args.host)
    policy = load_policy(args.model, args.prefix_cache_gb)
    server = PolicyServer(
        policy,
        name,
        args.host,
        args.port,
        api_key=args.api_key,
        batch_window=args.batch_window_ms / 1000,
        max_batch=args.max_batch,
        allow_weight_updates=args.allow_weight_updates,
    )
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops as cleanly as Ctrl-C
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        url = server.start()
        print(f"serving {name!r} at {url} (Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        policy.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
