"""The OpenAI-compatible side: PolicyServer serving the tiny transformers policy over real HTTP, and
OpenAIPolicy (and the plain openai client) talking to it."""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import gymnasium as gym
import numpy as np
import openai
import pytest
from PIL import Image

from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.openai_policy import (
    OpenAIPolicy,
    PolicyError,
    image_data_url,
    message_text,
    parse_openai_spec,
    reply_of,
)
from agents.vlm.policies.policy import ChatRequest, Reply, Sampling
from agents.vlm.rollout.chat import ChatFormatter, assistant_message
from agents.vlm.serving.server import ApiError, Limits, PolicyServer, parse_messages
from visrl_envs.core.tools import tool_call_text


class Recording:
    """The tiny policy, keeping every conversation it is asked; ``delay`` slows each call."""

    def __init__(self, inner: HFPolicy, delay: float = 0.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.tokenizer = inner.tokenizer
        self.delay = delay
        self.seen: list[ChatRequest] = []

    def reply(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]:
        self.seen.extend(requests)
        time.sleep(self.delay)
        return self.inner.reply(requests, sampling)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def tiny() -> HFPolicy:
    return HFPolicy.tiny(seed=0)


@pytest.fixture(scope="module")
def recording(tiny: HFPolicy) -> Recording:
    return Recording(tiny)


@pytest.fixture(scope="module")
def server(recording: Recording) -> Iterator[PolicyServer]:
    with PolicyServer(recording, "tiny") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: PolicyServer) -> Iterator[OpenAIPolicy]:
    policy = OpenAIPolicy("tiny", server.url, concurrency=4, timeout=30, max_retries=0)
    yield policy
    policy.close()


def jigsaw_requests(count: int) -> tuple[list[ChatRequest], list[tuple[np.ndarray, ...]]]:
    env = gym.make("visrl/Jigsaw-v1", size=84)
    formatter = ChatFormatter()
    requests, images = [], []
    for seed in range(count):
        obs, info = env.reset(seed=seed)
        spec = info["prompt_spec"]
        requests.append(ChatRequest(formatter.start(obs, spec), formatter.tools(spec)))
        images.append(obs["images"])
    env.close()
    return requests, images


def post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def completion(url: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
    return post(url, "/v1/chat/completions", json.dumps(body).encode())


def test_a_batch_of_env_conversations_comes_back_with_ids_and_logprobs(
    server: PolicyServer, recording: Recording, client: OpenAIPolicy, tiny: HFPolicy
) -> None:
    requests, images = jigsaw_requests(3)
    recording.seen.clear()
    replies = client.reply(requests, Sampling(temperature=1.0, max_new_tokens=12, seed=0))
    assert len(replies) == 3
    for reply in replies:
        assert reply.ids and reply.logprobs is not None and len(reply.ids) == len(reply.logprobs)
        assert all(math.isfinite(lp) and lp <= 0 for lp in reply.logprobs)
        assert tiny.codec.decode(reply.ids) == reply.text, "the ids are the ones the text came from"
        assert reply.finished == (reply.ids[-1] == tiny.codec.eos_id)
        assert reply.usage["completion_tokens"] == len(reply.ids) and reply.usage["prompt_tokens"] > 0
    # the server decoded the PNG data URLs back into the env's exact pixels, and got the tool schemas
    assert len(recording.seen) == 3
    got = sorted((request.messages[0]["content"][0]["image"] for request in recording.seen), key=lambda a: a.tobytes())
    want = sorted((obs[0] for obs in images), key=lambda a: a.tobytes())
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert all(request.tools == requests[0].tools for request in recording.seen)

    # a second turn: the assistant's text goes back as plain text
    recording.seen.clear()
    env = gym.make("visrl/Jigsaw-v1", size=84)
    env.reset(seed=0)
    obs2 = env.step(replies[0].text)[0]
    turn2 = ChatRequest(
        [*requests[0].messages, assistant_message(replies[0].text), ChatFormatter().feedback(obs2)], requests[0].tools
    )
    (reply2,) = client.reply([turn2], Sampling(max_new_tokens=4))
    assert reply2.ids and recording.seen[0].messages[1] == {"role": "assistant", "content": replies[0].text}
    env.close()


def test_greedy_answers_over_http_equal_the_in_process_policy(client: OpenAIPolicy, tiny: HFPolicy) -> None:
    (request,) = jigsaw_requests(1)[0]
    greedy = Sampling(temperature=0, max_new_tokens=8)
    (remote,) = client.reply([request], greedy)
    (local,) = tiny.reply([request], greedy)
    assert remote.ids == local.ids and remote.text == local.text and remote.finished == local.finished
    assert remote.logprobs is not None and local.logprobs is not None
    assert np.allclose(remote.logprobs, local.logprobs, atol=1e-5)


def test_max_tokens_cuts_with_finish_reason_length(client: OpenAIPolicy) -> None:
    (request,) = jigsaw_requests(1)[0]
    (reply,) = client.reply([request], Sampling(temperature=0, max_new_tokens=3))
    assert reply.ids is not None and len(reply.ids) == 3 and reply.finished is False


def test_the_plain_openai_client_gets_n_choices_logprobs_and_token_ids(server: PolicyServer, tiny: HFPolicy) -> None:
    plain = openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0)
    assert [m.id for m in plain.models.list()] == ["tiny"]
    picture = np.zeros((30, 40, 3), dtype=np.uint8)
    picture[:, :20] = (255, 0, 0)
    response = plain.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "You are a tiny model."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_data_url(picture)}},
                    {"type": "text", "text": "What is in the picture?"},
                ],
            },
        ],
        n=3,
        max_tokens=2,
        temperature=1.0,
        seed=7,
        logprobs=True,
        top_logprobs=0,
        extra_body={"return_token_ids": True},
    )
    assert response.object == "chat.completion" and response.model == "tiny" and response.id
    assert [c.index for c in response.choices] == [0, 1, 2]
    for choice in response.choices:
        ids = (choice.model_extra or {})["token_ids"]
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert len(ids) == len(choice.logprobs.content) <= 2
        assert [t.token for t in choice.logprobs.content] == [tiny.tokenizer.decode([i]) for i in ids]
        assert all(math.isfinite(t.logprob) and t.top_logprobs == [] for t in choice.logprobs.content)
        assert choice.finish_reason == ("stop" if ids[-1] == tiny.codec.eos_id else "length")
        assert choice.message.role == "assistant" and choice.message.content == tiny.codec.decode(ids)
    assert response.usage is not None and response.usage.completion_tokens == sum(
        len((c.model_extra or {})["token_ids"]) for c in response.choices
    )
    # without logprobs / return_token_ids, none come back
    bare = plain.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert bare.choices[0].logprobs is None and "token_ids" not in (bare.choices[0].model_extra or {})
    plain.close()


def test_structured_tool_calls_become_the_text_the_envs_parse() -> None:
    from openai.types.chat import ChatCompletion

    raw = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "swap", "arguments": '{"a": 1, "b": 2}'}}
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    expected = tool_call_text("swap", {"a": 1, "b": 2})
    for response in (ChatCompletion.model_validate(raw), raw):
        reply = reply_of(response)
        assert reply.text == expected and reply.finished and reply.ids is None and reply.logprobs is None
        assert reply.usage == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    env = gym.make("visrl/Jigsaw-v1", size=84)
    env.reset(seed=0)
    assert env.step(expected)[4]["action_error"] is None, "the env accepts the converted call"
    env.close()
    # content before the call is kept; arguments that are not JSON stay a string for the env to report
    bad = {"content": "thinking ", "tool_calls": [{"function": {"name": "swap", "arguments": "{oops"}}]}
    assert message_text(bad) == "thinking " + tool_call_text("swap", "{oops")  # type: ignore[arg-type]


def test_history_tool_calls_and_roles_reach_the_policy_as_text() -> None:
    messages = parse_messages(
        [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "swap", "arguments": '{"a": 1, "b": 2}'}}],
            },
        ],
        Limits(),
    )
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": tool_call_text("swap", {"a": 1, "b": 2})},
    ]


def png_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("url", "limits", "words"),
    [
        ("https://example.com/cat.png", Limits(), "never fetches"),
        ("  FILE:///etc/passwd", Limits(), "never fetches"),
        ("data:text/html;base64,PGI+", Limits(), "image/"),
        ("data:image/png;base64,aGVsbG8=", Limits(), "does not decode"),
        ("data:image/png;base64,***", Limits(), "base64"),
        ("data:image/png,raw", Limits(), "malformed"),
        (png_url(50, 50), Limits(max_image_pixels=49 * 49), "pixels"),
        (png_url(8, 8), Limits(max_images=1), "images per request"),
    ],
)
def test_hostile_images_are_refused_with_clear_messages(url: str, limits: Limits, words: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(ApiError) as caught:
        parse_messages([{"role": "user", "content": [part, part]}], limits)
    assert caught.value.status == 400 and words in caught.value.message


def test_bad_requests_get_openai_style_errors_and_the_server_lives_on(server: PolicyServer) -> None:
    status, body = completion(
        server.url,
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/x.png"}}],
            }
        ],
    )
    assert status == 400 and "never fetches" in body["error"]["message"]
    assert body["error"]["code"] == "unsupported_url" and body["error"]["type"] == "invalid_request_error"

    status, body = post(server.url, "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = post(server.url, "/v1/chat/completions", b"\xff\xfe not utf-8")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = post(server.url, "/v1/chat/completions", b'{"model": "tiny", "temperature": NaN}')
    assert status == 400
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 17}, "n"),
        ({"n": True}, "n"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"stream": True}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0]"),
        ({"seed": -1}, "seed"),
        ({"tools": "swap"}, "tools"),
    ]
    for fields, param in cases:
        status, body = completion(server.url, **fields)
        assert status == 400 and body["error"]["param"] == param, (fields, body)
    status, body = completion(server.url, model="gpt-9")
    assert status == 404 and body["error"]["code"] == "model_not_found"

    # a body that claims to be huge is refused before it is read
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Length", str(Limits().max_body_bytes + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "at most" in json.loads(response.read())["error"]["message"]
    conn.close()

    status, body = completion(server.url, stop=["\n"], max_tokens=1)  # stop is accepted (and ignored)
    assert status == 200 and len(body["choices"]) == 1
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()


def test_http_errors_and_unreachable_servers_raise_policy_error(server: PolicyServer) -> None:
    with OpenAIPolicy("not-served", server.url, max_retries=0) as wrong, pytest.raises(PolicyError) as caught:
        wrong.reply([ChatRequest([{"role": "user", "content": "hi"}])], Sampling(max_new_tokens=2))
    assert caught.value.status == 404 and server.url in str(caught.value) and "not served here" in str(caught.value)

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.monotonic()
    with OpenAIPolicy("tiny", url, timeout=2, max_retries=1) as gone, pytest.raises(PolicyError) as caught:
        gone.reply([ChatRequest([{"role": "user", "content": "hi"}])], Sampling(max_new_tokens=2))
    assert url in str(caught.value) and caught.value.status is None and caught.value.__cause__ is None
    assert time.monotonic() - start < 10


def test_concurrency_is_bounded_and_concurrent_requests_are_batched(tiny: HFPolicy) -> None:
    requests = [ChatRequest([{"role": "user", "content": f"count to {i}"}]) for i in range(6)]
    slow = Recording(tiny, delay=0.1)
    with PolicyServer(slow, "tiny", batch_window=0.0) as server:
        with OpenAIPolicy("tiny", server.url, concurrency=2) as policy:
            replies = policy.reply(requests, Sampling(max_new_tokens=4))
        assert len(replies) == 6 and all(r.ids for r in replies)
        assert server.stats()["max_in_flight"] == 2
    with PolicyServer(slow, "tiny", batch_window=0.3) as server:
        with OpenAIPolicy("tiny", server.url, concurrency=6) as policy:
            replies = policy.reply(requests, Sampling(max_new_tokens=4))
        stats = server.stats()
        assert len(replies) == 6 and stats["max_in_flight"] <= 6
        assert stats["largest_call"] >= 2 and stats["policy_calls"] < 6, stats


def test_reply_works_from_threads_and_inside_a_running_event_loop(client: OpenAIPolicy) -> None:
    import asyncio

    request = ChatRequest([{"role": "user", "content": "hi"}])
    results: list[list[Reply]] = []
    threads = [
        threading.Thread(target=lambda: results.append(client.reply([request], Sampling(max_new_tokens=2))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3

    async def inside() -> list[Reply]:
        return client.reply([request], Sampling(max_new_tokens=2))

    assert len(asyncio.run(inside())) == 1


def test_policy_specs_parse() -> None:
    assert parse_openai_spec("openai:tiny@http://127.0.0.1:8000/v1") == ("tiny", "http://127.0.0.1:8000/v1")
    assert parse_openai_spec("openai:Qwen/Qwen2.5-VL-3B-Instruct@https://host/v1") == (
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "https://host/v1",
    )
    for bad in ["tiny@http://x/v1", "openai:@http://x/v1", "openai:tiny", "openai:tiny@ftp://x", "openai:t@http://"]:
        with pytest.raises(ValueError, match=r"openai:MODEL@URL|no host"):
            parse_openai_spec(bad)
    assert OpenAIPolicy("m", "http://127.0.0.1:1/v1").name == "openai:m"
