"""The in-process transformers policy: any Qwen-VL-family image-text-to-text model from a local path.

``HFPolicy.from_pretrained(path)`` loads the model (bf16 on GPU, fp32 on CPU) and its processor
without the video processor (it needs torchvision, which this project does not install);
``HFPolicy.tiny()`` builds the random offline model of :mod:`agents.vlm.policies.tiny`. Both levels of the
policy protocol are here: ``reply`` for evaluation, ``generate`` / ``token_logprobs`` on exact ids
for RL. Batches are left-padded; the vision special tokens are suppressed in generation, and the
recorded log-probabilities are those of the distribution sampled from (temperature-scaled logits,
suppressed tokens removed), computed in fp32 from the same logits ``generate`` sampled with.
``generate`` keeps the key/value states of what it has seen (:mod:`agents.vlm.policies.prefix_cache`), so
the next turn of a conversation, or the G samples of one prompt, encode only what is new.

Supported: models whose processors take ``image_grid_thw`` and mark image tokens in
``mm_token_type_ids`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; the tests run tiny random Qwen2.5-VL and
Qwen3-VL models). Other families (SmolVLM, Idefics3,
LLaVA-OneVision) batch their pixels differently and are refused with a clear message.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.vlm.policies.codec import ProcessorCodec, image_key
from agents.vlm.policies.logprobs import gather_logprobs
from agents.vlm.policies.policy import ChatRequest, Completion, Reply, Sampling, TokenPrompt, reply_by_tokens
from agents.vlm.policies.prefix_cache import CACHED_MODEL_TYPES, PrefixCache, cached_generate
from agents.vlm.policies.tiny import VISION_TOKENS, image_only_processor

#: Model types whose image inputs this backend batches (pixel_values + image_grid_thw).
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def load_processor(path: str | Path) -> Any:
    """The processor of a local model directory, image processor + tokenizer only (the PIL image
    processor: the default fast one needs torchvision)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    image_processor = AutoImageProcessor.from_pretrained(path)
    template = tokenizer.chat_template
    for name in ("chat_template.jinja", "chat_template.json"):
        if template is None and (path / name).exists():
            text = (path / name).read_text()
            template = text if name.endswith(".jinja") else json.loads(text)["chat_template"]
    if template is None:
        raise ValueError(f"{path} has no chat template (tokenizer_config.json, chat_template.jinja or .json)")
    return image_only_processor(image_processor, tokenizer, template)


class HFPolicy:
    """A transformers VLM as a :class:`~agents.vlm.policies.policy.TokenPolicy`.

    ``micro_batch``: sequences per forward in :meth:`token_logprobs` (bounds memory on long prompts).
    ``image_cache``: how many processed images to keep (the same image recurs every turn).
    ``prefix_cache_bytes``: memory for the key/value states of past sequences, so that a turn only
    encodes what is new (:mod:`agents.vlm.policies.prefix_cache`); 0 generates through ``model.generate``
    with a full prefill every call."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        name: str = "hf",
        micro_batch: int = 8,
        image_cache: int = 256,
        prefix_cache_bytes: int = 1 << 30,
    ) -> None:
        import torch

        model_type = getattr(model.config, "model_type", "")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model type {model_type!r} is not supported by the transformers policy yet; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.codec = ProcessorCodec(processor)
        self.name = name
        self.micro_batch = micro_batch
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.codec.eos_id)
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
        banned = [self.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
        self.banned_ids = sorted({int(i) for i in banned if i is not None and i != self.tokenizer.unk_token_id})
        self._banned = torch.tensor(self.banned_ids, dtype=torch.long)
        self._pixels: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()
        self._image_cache = image_cache
        self.prefix_cache = (
            PrefixCache(prefix_cache_bytes, self.image_token_id)
            if prefix_cache_bytes and model_type in CACHED_MODEL_TYPES
            else None
        )

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: Any = None, **kwargs: Any) -> HFPolicy:
        """Load a local model directory. ``device`` defaults to CUDA when present; ``dtype`` to bf16
        on GPU and fp32 on CPU."""
        import torch
        from transformers import AutoModelForImageTextToText

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a model directory (no config.json); weights load from a local path")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        model: Any = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        model = model.to(device).eval()
        return cls(model, load_processor(path), name=kwargs.pop("name", f"hf:{path.name}"), **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, architecture: str = "qwen2_5_vl", **kwargs: Any) -> HFPolicy:
        """The random offline model of :mod:`agents.vlm.policies.tiny` (fp32, CPU), a Qwen2.5-VL or a Qwen3-VL."""
        from agents.vlm.policies.tiny import build_tiny_vlm

        tiny = build_tiny_vlm(seed=seed, architecture=architecture)
        return cls(tiny.model, tiny.processor, name=kwargs.pop("name", "tiny"), **kwargs)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # --- inputs -------------------------------------------------------------------------------

    def _pixel_inputs(self, image: np.ndarray, key: bytes | None = None) -> tuple[Any, Any]:
        """``(pixel_values, image_grid_thw)`` of one image, cached by content (``key``: its
        :func:`image_key`, when the caller already has it)."""
        from PIL import Image

        key = key if key is not None else image_key(image)
        hit = self._pixels.get(key)
        if hit is not None:
            self._pixels.move_to_end(key)
            return hit
        out = self.processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")
        hit = (out["pixel_values"], out["image_grid_thw"])
        self._pixels[key] = hit
        if len(self._pixels) > self._image_cache:
            self._pixels.popitem(last=False)
        return hit

    def model_inputs(self, prompts: Sequence[TokenPrompt]) -> dict[str, Any]:
        """Left-padded ids, attention mask, image-token marks and the pixels of every image, in order."""
        import torch

        width = max(len(p.ids) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        pixels, grids = [], []
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt.ids) :] = torch.tensor(prompt.ids, dtype=torch.long)
            attention[row, width - len(prompt.ids) :] = 1
            for image in prompt.images:
                values, grid = self._pixel_inputs(image)
                pixels.append(values)
                grids.append(grid)
        marks = (ids == self.image_token_id).long() * attention
        self.check_image_tokens(int(marks.sum()), grids)
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": attention, "mm_token_type_ids": marks}
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
            batch["image_grid_thw"] = torch.cat(grids)
        device = self.device
        return {k: v.to(device) for k, v in batch.items()}

    def check_image_tokens(self, found: int, grids: Sequence[Any]) -> None:
        """Refuse ids whose image tokens do not match the images' grids (``found`` tokens)."""
        expected = sum(int(g.prod()) // self._merge_area() for g in grids)
        if found != expected:
            raise ValueError(
                f"the ids hold {found} image tokens but the {len(grids)} images need {expected}: "
                "ids and images are out of step"
            )

    def _merge_area(self) -> int:
        merge = int(getattr(self.processor.image_processor, "merge_size", 2))
        return merge * merge

    # --- token level --------------------------------------------------------------------------

    def generate(self, prompts: Sequence[TokenPrompt], sampling: Sampling) -> list[Completion]:
        """Continue each prompt until the end-of-turn token or ``max_new_tokens``, in one batch."""
        import torch

        if not prompts:
            return []
        if self.prefix_cache is not None:
            return cached_generate(self, self.prefix_cache, prompts, sampling)
        batch = self.model_inputs(prompts)
        width = batch["input_ids"].shape[1]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        greedy = sampling.temperature == 0
        options: dict[str, Any] = {
            "do_sample": not greedy,
            "max_new_tokens": sampling.max_new_tokens,
            "suppress_tokens": self.banned_ids,
            "eos_token_id": self.codec.eos_id,
            "pad_token_id": self.pad_id,
            "output_logits": True,
            "return_dict_in_generate": True,
            "repetition_penalty": 1.0,
        }
        if not greedy:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        with torch.no_grad():
            out = self.model.generate(**batch, **options)
        new = out.sequences[:, width:]
        logits = torch.stack(out.logits, dim=1)  # (B, T, V): raw, before the sampling processors
        logprobs = gather_logprobs(logits, new.to(logits.device), sampling.scale, self._banned.to(logits.device))
        completions = []
        eos = self.codec.eos_id
        for tokens, values in zip(new.tolist(), logprobs.tolist(), strict=True):  # one conversion, not one per row
            finished = eos in tokens
            end = tokens.index(eos) + 1 if finished else len(tokens)
            completions.append(Completion(tokens[:end], values[:end], finished))
        return completions

    def token_logprobs(self, sequences: Sequence[TokenPrompt], temperature: float = 1.0) -> list[np.ndarray]:
        import torch

        results: list[np.ndarray] = []
        for start in range(0, len(sequences), self.micro_batch):
            chunk = sequences[start : start + self.micro_batch]
            batch = self.model_inputs(chunk)
            with torch.no_grad():
                logits = self.model(**batch).logits
            ids = batch["input_ids"]
            lp = gather_logprobs(logits[:, :-1], ids[:, 1:], temperature, self._banned.to(logits.device))
            width = ids.shape[1]
            for row, seq in enumerate(chunk):
                values = np.zeros(len(seq.ids), dtype=np.float64)
                values[1:] = lp[row, width - len(seq.ids) :].double().cpu().numpy()
                results.append(values)
        return results

    # --- chat level ---------------------------------------------------------------------------

    def reply(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]:
        return reply_by_tokens(self, requests, sampling)

    def close(self) -> None:
        self._pixels.clear()
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
