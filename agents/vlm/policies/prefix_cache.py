"""Multi-turn generation that never re-encodes what it has seen: a prefix cache of key/value states.

A multi-turn rollout sends each trajectory back to the model with its whole history plus the env's
new turn, and the G members of a group start from the same prompt. Re-encoding all of it every turn
made the prefill 70-83% of generation time (benchmarks/RESULTS.md). :class:`PrefixCache` keeps the
attention keys and values of the sequences generated so far (LRU, bounded in bytes); a new prompt
starts from its longest cached prefix and only its new tokens and new images go through the model.
Identical uncached remainders in one batch (a group's shared first prompt) are encoded once.

Why not ``model.generate(past_key_values=...)``: in transformers 5.23 the Qwen-VL models take one
``image_grid_thw`` for two jobs, the multimodal rotary positions (which need every image of the
sequence) and the vision tower (which must see only the images not yet cached), so a turn that
brings new images (every Jigsaw turn) cannot continue from a cache through ``generate``. Here the
positions of the new chunk come from the model's own ``get_rope_index``, continued from the largest
position of the cached prefix (as ``get_rope_index`` numbers a whole sequence), and the forward gets
only the chunk and its images; decoding is a plain loop with transformers' top-k/top-p warpers, into
cache buffers allocated once per call.

Layout of a batch: each row's cached prefix is right-aligned in the cache columns and its new chunk
right-aligned in the chunk columns, so a row may have a hole (attention mask 0) between the two;
positions are explicit, so holes shift nothing. Token log-probabilities are those of
:func:`agents.vlm.policies.logprobs.gather_logprobs`, and a re-scoring of the full sequence reproduces them (the
replay tests in tests/test_vlm_rollout.py hold the cached path to 1e-4).

The cache is emptied whenever the model's weights change (an optimizer step, ``load_state_dict``),
detected before each call by :func:`weights_fingerprint`. Greedy output is token-identical to
``model.generate`` (tests/test_vlm_prefix_cache.py).
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.vlm.policies.codec import image_key
from agents.vlm.policies.logprobs import gather_logprobs
from agents.vlm.policies.policy import Completion, Sampling, TokenPrompt

#: Model types whose forward takes explicit multimodal rotary positions and a chunk's own images.
CACHED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
#: Generated tokens a call's buffers have room for before they grow (by doubling).
ROOM = 256


@dataclass
class CachedSequence:
    """The keys and values of one sequence: per layer (heads, length, head_dim)."""

    ids: np.ndarray
    image_keys: tuple[bytes, ...]
    keys: list[Any]
    values: list[Any]
    positions: Any = None  # (3, length) multimodal rotary positions
    uid: int = 0
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = sum(t.numel() * t.element_size() for t in itertools.chain(self.keys, self.values))

    def __len__(self) -> int:
        return len(self.ids)

    def is_prefix_of(self, other: CachedSequence) -> bool:
        n = len(self.ids)
        return (
            n <= len(other.ids)
            and self.image_keys == other.image_keys[: len(self.image_keys)]
            and bool(np.array_equal(self.ids, other.ids[:n]))
        )


def image_run_starts(ids: np.ndarray, image_token_id: int) -> np.ndarray:
    """Indices where a run of image tokens (one image) begins."""
    is_image = ids == image_token_id
    starts = is_image.copy()
    starts[1:] &= ~is_image[:-1]
    return np.flatnonzero(starts)


def usable_prefix(
    cached_ids: np.ndarray,
    cached_images: Sequence[bytes],
    ids: np.ndarray,
    images: Sequence[bytes],
    image_token_id: int,
) -> tuple[int, int]:
    """How much of a cached sequence a prompt can reuse: ``(tokens, images)``.

    The longest common prefix of the ids, shortened so that at least one prompt token is left to
    compute (its logits start the generation), no image is cut in two, and every image inside the
    prefix is the same image (same content) in both."""
    n = min(len(cached_ids), len(ids) - 1)
    if n <= 0:
        return 0, 0
    differ = np.flatnonzero(cached_ids[:n] != ids[:n])
    length = int(differ[0]) if len(differ) else n
    runs = image_run_starts(ids, image_token_id)
    if length > 0 and ids[length] == image_token_id and ids[length - 1] == image_token_id:
        length = int(runs[np.searchsorted(runs, length, side="right") - 1])  # back to the image's first token
    count = int(np.searchsorted(runs, length, side="left"))
    for index in range(count):
        if index >= len(cached_images) or index >= len(images) or cached_images[index] != images[index]:
            return int(runs[index]), index
    return length, count


def block_hashes(ids: np.ndarray, images: Sequence[bytes], image_token_id: int, block: int) -> list[int]:
    """Chained hashes of the whole ``block``-token blocks of ``ids``: hash ``i`` stands for the first
    ``(i + 1) * block`` ids and the content of the images that start in them (image tokens are the
    same ids whatever the picture)."""
    runs = image_run_starts(ids, image_token_id)
    first_image_after = np.searchsorted(runs, np.arange(0, len(ids) - len(ids) % block + 1, block), side="left")
    hashes, chained = [], 0
    for i in range(len(ids) // block):
        new_images = tuple(images[first_image_after[i] : first_image_after[i + 1]])
        chained = hash((chained, ids[i * block : (i + 1) * block].tobytes(), new_images))
        hashes.append(chained)
    return hashes


class PrefixCache:
    """An LRU store of :class:`CachedSequence` bounded to ``max_bytes``, indexed by blocks.

    Every entry's whole blocks of ``block`` tokens are indexed by chained hashes (as vLLM's prefix
    caching does), so a prompt finds the entries that share its longest run of whole blocks in one
    walk over its own blocks, however many entries there are; the few most recent of them are then
    compared token by token (:func:`usable_prefix`). ``add`` drops the entry a new sequence grew from
    when the new one contains it (a later prompt that matches the old one matches the new one at
    least as far)."""

    #: How many entries sharing a prompt's longest block run are compared with it.
    CANDIDATES = 8

    def __init__(self, max_bytes: int, image_token_id: int, block: int = 16) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.max_bytes = max_bytes
        self.image_token_id = image_token_id
        self.block = block
        self.entries: OrderedDict[int, CachedSequence] = OrderedDict()
        self.nbytes = 0
        self.fingerprint: Any = None
        self._uids = itertools.count(1)
        self._blocks: dict[int, dict[int, None]] = {}  # chained block hash -> uids (oldest first)
        self._entry_blocks: dict[int, list[int]] = {}
        self.prompt_tokens = 0  # prompt tokens asked for
        self.encoded_tokens = 0  # of which went through the model (the rest: from the cache or a batch twin)

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()
        self._blocks.clear()
        self._entry_blocks.clear()
        self.nbytes = 0

    def match(self, ids: np.ndarray, images: Sequence[bytes]) -> tuple[CachedSequence | None, int, int]:
        """The entry with the longest usable prefix of a prompt (to within a block), that prefix's
        token and image counts. The prompt's last token is never reused (its logits start the turn)."""
        shared: dict[int, None] | None = None
        for chained in block_hashes(ids[: len(ids) - 1], images, self.image_token_id, self.block):
            uids = self._blocks.get(chained)
            if uids is None:
                break
            shared = uids
        best: tuple[CachedSequence | None, int, int] = (None, 0, 0)
        for uid in list(shared or ())[-self.CANDIDATES :]:
            entry = self.entries[uid]
            tokens, count = usable_prefix(entry.ids, entry.image_keys, ids, images, self.image_token_id)
            if tokens > best[1]:
                best = (entry, tokens, count)
        if best[0] is not None:
            self.entries.move_to_end(best[0].uid)
        return best

    def add(self, entry: CachedSequence, grew_from: CachedSequence | None = None) -> None:
        if entry.nbytes > self.max_bytes:
            return
        if grew_from is not None and grew_from.uid in self.entries and grew_from.is_prefix_of(entry):
            self._drop(grew_from.uid)
        entry.uid = next(self._uids)
        self.entries[entry.uid] = entry
        hashes = block_hashes(entry.ids, entry.image_keys, self.image_token_id, self.block)
        self._entry_blocks[entry.uid] = hashes
        for chained in hashes:
            self._blocks.setdefault(chained, {})[entry.uid] = None
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, uid: int) -> None:
        self.nbytes -= self.entries.pop(uid).nbytes
        for chained in self._entry_blocks.pop(uid):
            uids = self._blocks[chained]
            del uids[uid]
            if not uids:
                del self._blocks[chained]


def rope_index_owner(model: Any) -> Any:
    """The submodule that computes the multimodal rotary positions (found through wrappers such as
    peft's)."""
    for module in model.modules():
        if hasattr(type(module), "get_rope_index"):
            return module
    raise ValueError(f"{type(model).__name__} has no get_rope_index: its positions cannot be cached")


def weights_fingerprint(model: Any) -> tuple[Any, ...]:
    """Changes whenever the weights change.

    Every parameter's storage and version counter catch replacements and ordinary in-place writes
    (``load_state_dict``, plain optimizers). Fused optimizers (``torch.optim.AdamW(fused=True)``,
    transformers' default ``adamw_torch_fused``) write without bumping the version counter, so the
    trainable parameters are also summed bit-exactly (as integers: any changed bit shows)."""
    import torch

    same_size_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    fingerprint: list[Any] = []
    sums = []
    for parameter in model.parameters():
        fingerprint.append((parameter.data_ptr(), parameter._version))
        if parameter.requires_grad:
            data = parameter.detach()
            sums.append(data.view(same_size_int[data.element_size()]).sum(dtype=torch.int64))
    if sums:
        fingerprint.append(tuple(torch.stack(sums).tolist()))
    return tuple(fingerprint)


@dataclass
class _Row:
    """One prompt's plan: what the cache gives and what is left to encode."""

    ids: np.ndarray
    image_keys: tuple[bytes, ...]
    source: CachedSequence | None
    cached: int  # tokens taken from ``source``
    cached_images: int
    positions: Any  # (3, len(ids)) multimodal rotary positions of the whole prompt
    pixels: list[tuple[Any, Any]]  # (pixel_values, image_grid_thw) of each image

    @property
    def key(self) -> tuple[Any, ...]:
        """Rows with equal keys compute the same thing (the cached prefix is the same tokens and
        images, whichever entry holds it)."""
        return (self.cached, self.ids.tobytes(), self.image_keys)


def _buffer_cache(buffers: Sequence[tuple[Any, Any]], length: int) -> Any:
    """A transformers cache over per-layer (rows, heads, capacity, dim) key and value buffers whose
    first ``length`` columns hold states."""
    from transformers.cache_utils import Cache

    layer_type = _buffer_layer_type()
    return Cache(layers=[layer_type(keys, values, length) for keys, values in buffers])


@functools.cache
def _buffer_layer_type() -> type:
    """The cache layer class (made on first use: transformers is imported only with a model)."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A cache layer that writes into buffers allocated once for the whole call.

        transformers' ``DynamicLayer`` concatenates, copying the whole cache at every decode step;
        with 32 rows of ~1000 tokens that was the largest cost after attention in a profiled Jigsaw
        rollout."""

        def __init__(self, keys: Any, values: Any, length: int) -> None:
            super().__init__()
            self.buffers = (keys, values)
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self._view(length)

        @property
        def capacity(self) -> int:
            return int(self.buffers[0].shape[-2])

        def _view(self, length: int) -> None:
            self.length = length
            self.keys, self.values = self.buffers[0][:, :, :length], self.buffers[1][:, :, :length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            start = self.length
            end = start + key_states.shape[-2]
            if end > self.capacity:  # grow by doubling: amortised, and no huge buffer for a huge max_new_tokens
                grown = [
                    buffer.new_empty((*buffer.shape[:2], max(end, 2 * self.capacity), buffer.shape[3]))
                    for buffer in self.buffers
                ]
                for old, new in zip(self.buffers, grown, strict=True):
                    new[:, :, :start] = old[:, :, :start]
                self.buffers = (grown[0], grown[1])
            self.buffers[0][:, :, start:end] = key_states
            self.buffers[1][:, :, start:end] = value_states
            self._view(end)
            return self.keys, self.values

    return BufferLayer


def cached_generate(
    policy: Any, cache: PrefixCache, prompts: Sequence[TokenPrompt], sampling: Sampling
) -> list[Completion]:
    """:meth:`agents.vlm.policies.hf.HFPolicy.generate` through ``cache`` (see the module doc)."""
    import torch

    fingerprint = weights_fingerprint(policy.model)
    if fingerprint != cache.fingerprint:
        cache.clear()
        cache.fingerprint = fingerprint
    rope = rope_index_owner(policy.model)
    rows = [_plan(policy, cache, rope, prompt) for prompt in prompts]
    unique: dict[tuple[Any, ...], int] = {}  # row key -> its index in ``encode``
    encode: list[_Row] = []
    for row in rows:
        if row.key not in unique:
            unique[row.key] = len(encode)
            encode.append(row)
    cache.prompt_tokens += sum(len(row.ids) for row in rows)
    cache.encoded_tokens += sum(len(row.ids) - row.cached for row in encode)
    with torch.no_grad():
        past, mask, logits = _prefill(policy, encode, sampling)
        if len(encode) < len(rows):  # identical prompts were encoded once; give every row its copy
            index = torch.tensor([unique[row.key] for row in rows], device=mask.device)
            buffers = [tuple(buffer.index_select(0, index) for buffer in layer.buffers) for layer in past.layers]
            past = _buffer_cache(buffers, past.get_seq_length())
            mask, logits = mask[index], logits[index]
        next_positions = torch.stack([row.positions.max() + 1 for row in rows]).to(mask.device)
        prompt_width = past.get_seq_length()
        new_ids, new_logprobs, mask, past = _decode(policy, sampling, past, mask, logits, next_positions)
        completions = _completions(policy, new_ids, new_logprobs)
        _store(cache, rows, completions, past, mask, prompt_width)
    return completions


def _plan(policy: Any, cache: PrefixCache, rope: Any, prompt: TokenPrompt) -> _Row:
    """Match a prompt against the cache and compute the rotary positions of what is left (the
    positions of a chunk continue from its prefix's largest one, as in ``get_rope_index``)."""
    import torch

    ids = np.asarray(prompt.ids, dtype=np.int64)
    keys = tuple(image_key(image) for image in prompt.images)
    pixels = [policy._pixel_inputs(image, key) for image, key in zip(prompt.images, keys, strict=True)]
    grids = [grid for _, grid in pixels]
    policy.check_image_tokens(int(np.count_nonzero(ids == policy.image_token_id)), grids)
    source, tokens, count = cache.match(ids, keys)
    chunk = torch.from_numpy(ids[tokens:])
    if count < len(grids):
        marks = (chunk == policy.image_token_id).long()[None]
        positions = rope.get_rope_index(
            input_ids=chunk[None], mm_token_type_ids=marks, image_grid_thw=torch.cat(grids[count:])
        )[0][:, 0]
    else:
        positions = torch.arange(len(chunk)).expand(3, -1)
    if source is not None:
        prefix = source.positions[:, :tokens]
        positions = torch.cat([prefix, positions + prefix.max() + 1], dim=1)
    return _Row(ids, keys, source, tokens, count, positions, pixels)


def _prefill(policy: Any, rows: Sequence[_Row], sampling: Sampling) -> Any:
    """Encode each row's uncached chunk after its cached prefix: ``(cache, attention mask, last
    logits)``; the cache and mask have room for up to :data:`ROOM` more tokens (they grow past it)."""
    import torch

    device = policy.device
    cached_width = max(row.cached for row in rows)
    chunk_width = max(len(row.ids) - row.cached for row in rows)
    batch = len(rows)
    ids = torch.full((batch, chunk_width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros((batch, cached_width + chunk_width + min(sampling.max_new_tokens, ROOM)), dtype=torch.long)
    positions = torch.zeros((3, batch, chunk_width), dtype=torch.long)
    pixels, grids = [], []
    for r, row in enumerate(rows):
        chunk = len(row.ids) - row.cached
        ids[r, chunk_width - chunk :] = torch.from_numpy(row.ids[row.cached :])
        mask[r, cached_width - row.cached : cached_width] = 1
        mask[r, cached_width + chunk_width - chunk : cached_width + chunk_width] = 1
        positions[:, r, chunk_width - chunk :] = row.positions[:, row.cached :]
        for values, grid in row.pixels[row.cached_images :]:
            pixels.append(values)
            grids.append(grid)
    mask = mask.to(device)
    past = _buffer_cache(_batch_prefixes(policy, rows, cached_width, mask.shape[1]), cached_width)
    inputs: dict[str, Any] = {
        "input_ids": ids.to(device),
        "attention_mask": mask[:, : cached_width + chunk_width],
        "position_ids": positions.to(device),
        "past_key_values": past,
        "use_cache": True,
        "logits_to_keep": 1,
    }
    if pixels:
        inputs["pixel_values"] = torch.cat(pixels).to(device)
        inputs["image_grid_thw"] = torch.cat(grids).to(device)
    out = policy.model(**inputs)
    return past, mask, out.logits[:, -1]


def _batch_prefixes(policy: Any, rows: Sequence[_Row], width: int, capacity: int) -> list[tuple[Any, Any]]:
    """Per layer, buffers of ``capacity`` columns holding the rows' cached keys and values
    right-aligned in the first ``width`` (zeros before)."""
    import torch

    config = policy.model.config.get_text_config()
    heads = config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    device = policy.device
    # the dtype the attention layers make their keys in (autocast's, when a trainer generates under it)
    autocast = torch.is_autocast_enabled(device.type)
    dtype = torch.get_autocast_dtype(device.type) if autocast else next(policy.model.parameters()).dtype
    out = []
    for layer in range(config.num_hidden_layers):
        keys = torch.zeros((len(rows), heads, capacity, dim), dtype=dtype, device=device)
        values = torch.zeros_like(keys)
        for r, row in enumerate(rows):
            if row.source is not None and row.cached:
                keys[r, :, width - row.cached : width] = row.source.keys[layer][:, : row.cached]
                values[r, :, width - row.cached : width] = row.source.values[layer][:, : row.cached]
        out.append((keys, values))
    return out


def _decode(policy: Any, sampling: Sampling, past: Any, mask: Any, logits: Any, positions: Any) -> Any:
    """Sample token by token from the prefilled state: ``(tokens, log-probabilities, mask, cache)``,
    tokens and log-probabilities (rows, steps), the finished rows padded."""
    import torch
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    banned = policy._banned.to(logits.device)
    warpers: list[Any] = []
    if sampling.temperature > 0 and sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.temperature > 0 and sampling.top_p < 1:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    eos, pad = policy.codec.eos_id, policy.pad_id
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    width = past.get_seq_length()
    tokens, logprobs = [], []
    for step in range(sampling.max_new_tokens):
        scores = logits.float()
        if len(banned):
            scores = scores.index_fill(-1, banned, float("-inf"))
        if sampling.temperature == 0:
            chosen = scores.argmax(-1)
        else:
            scores = scores / sampling.temperature
            for warp in warpers:
                scores = warp(None, scores)
            chosen = torch.multinomial(scores.softmax(-1), 1).squeeze(1)
        chosen = chosen.masked_fill(done, pad)
        tokens.append(chosen)
        logprobs.append(gather_logprobs(logits, chosen, sampling.scale, banned))
        done |= chosen == eos
        if bool(done.all()) or step == sampling.max_new_tokens - 1:
            break
        if width + step >= mask.shape[1]:
            mask = torch.cat([mask, torch.zeros_like(mask)], dim=1)
        mask[:, width + step] = 1
        out = policy.model(
            input_ids=chosen[:, None],
            attention_mask=mask[:, : width + step + 1],
            position_ids=(positions + step).view(1, -1, 1).expand(3, -1, 1),
            past_key_values=past,
            use_cache=True,
        )
        logits = out.logits[:, -1]
    return torch.stack(tokens, 1), torch.stack(logprobs, 1), mask, past


def _completions(policy: Any, tokens: Any, logprobs: Any) -> list[Completion]:
    eos = policy.codec.eos_id
    completions = []
    for row_tokens, row_logprobs in zip(tokens.tolist(), logprobs.tolist(), strict=True):
        finished = eos in row_tokens
        end = row_tokens.index(eos) + 1 if finished else len(row_tokens)
        completions.append(Completion(row_tokens[:end], row_logprobs[:end], finished))
    return completions


def _store(
    cache: PrefixCache,
    rows: Sequence[_Row],
    completions: Sequence[Completion],
    past: Any,
    mask: Any,
    prompt_width: int,
) -> None:
    """Keep each row's keys and values: its prompt (the mask's first ``prompt_width`` columns) and
    every generated token it fed to the model (all but the last)."""
    import torch

    for r, (row, completion) in enumerate(zip(rows, completions, strict=True)):
        fed = len(completion.ids) - 1
        columns = torch.cat(
            [
                torch.nonzero(mask[r, :prompt_width]).squeeze(1),
                torch.arange(prompt_width, prompt_width + fed, device=mask.device),
            ]
        )
        next_position = row.positions.max() + 1
        entry = CachedSequence(
            ids=np.concatenate([row.ids, np.asarray(completion.ids[:fed], dtype=np.int64)]),
            image_keys=row.image_keys,
            keys=[layer.keys[r].index_select(1, columns) for layer in past.layers],
            values=[layer.values[r].index_select(1, columns) for layer in past.layers],
            positions=torch.cat([row.positions, (torch.arange(fed) + next_position).expand(3, -1)], dim=1),
        )
        cache.add(entry, grew_from=row.source)
