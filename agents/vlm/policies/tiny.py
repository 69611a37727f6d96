"""A tiny vision-language model built entirely in code: tests and CI need no download.

:func:`build_tiny_vlm` makes a random-weight Qwen2.5-VL-architecture model (2 text layers, hidden
64, a 2-block vision tower: ~0.4M parameters), a byte-level BPE tokenizer trained in-process with
the Qwen special tokens, a Qwen2.5-style chat template (tools as JSON function schemas in the
system turn, ``<tool_call>`` replies, images as ``<|vision_start|><|image_pad|><|vision_end|>``),
and the PIL image processor. ``save_pretrained(path)`` writes it as a normal local model directory,
so the same code path that loads a user's real Qwen2.5-VL from a local path loads it too.
``architecture="qwen3_vl"`` builds the same thing as a Qwen3-VL.

Pitfalls handled here (DESIGN.md section 5): transformers' Qwen2.5-VL processor also wants a video
processor, which needs torchvision; :class:`ImageOnlyProcessor` declares only the image processor
and the tokenizer. Generation must suppress the vision special tokens (:data:`VISION_TOKENS`), or a
random policy samples ``<|image_pad|>`` and re-scoring the trajectory fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Special tokens of the Qwen2.5-VL family that the tiny tokenizer reproduces.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
)
#: Tokens a policy must never generate (they stand for pixels, not text).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

#: A Qwen2.5-style chat template: the tools' JSON schemas in the system turn, images as pad tokens.
CHAT_TEMPLATE = (
    "{%- set nl = '\\n' -%}"
    "{%- if tools -%}<|im_start|>system{{ nl }}"
    "{%- if messages[0]['role'] == 'system' %}{%- if messages[0]['content'] is string -%}{{ messages[0]['content'] }}{%- else -%}{%- for part in messages[0]['content'] -%}{{ part['text'] }}{%- endfor -%}{%- endif -%}{{ nl }}{{ nl }}{% endif -%}"
    "# Tools{{ nl }}{{ nl }}You may call one function per turn.{{ nl }}{{ nl }}"
    "You are provided with function signatures within <tools></tools> XML tags:{{ nl }}<tools>"
    "{%- for tool in tools %}{{ nl }}{{ tool | tojson }}{%- endfor %}{{ nl }}</tools>{{ nl }}{{ nl }}"
    "For a function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:{{ nl }}<tool_call>{{ nl }}"
    '{"name": <function-name>, "arguments": <args-json-object>}{{ nl }}</tool_call><|im_end|>{{ nl }}'
    "{%- elif messages[0]['role'] == 'system' -%}"
    "<|im_start|>system{{ nl }}{%- if messages[0]['content'] is string -%}{{ messages[0]['content'] }}{%- else -%}{%- for part in messages[0]['content'] -%}{{ part['text'] }}{%- endfor -%}{%- endif -%}<|im_end|>{{ nl }}"
    "{%- endif -%}"
    "{%- for message in messages -%}{%- if not (loop.first and message['role'] == 'system') -%}"
    "<|im_start|>{{ message['role'] }}{{ nl }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- else -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|im_end|>{{ nl }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ nl }}{%- endif -%}"
)

#: Text the BPE merges are learned from: the grammar and vocabulary agents write in visrl.
_CORPUS = (
    '<think>swap the tiles</think><tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>',
    "<answer>A</answer> <answer>B</answer> <answer>done</answer> <answer>2 1\n3 4</answer>",
    '<answer><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256"><rect x="16" y="32" '
    'width="64" height="48" fill="#e6194b"/><ellipse cx="128" cy="128" rx="40" ry="30" fill="#4363d8"/>'
    "</svg></answer>",
    "Write SVG code that reproduces the target image. Restore the original image by swapping tiles.",
    "The image is divided into 2x2 tiles. Positions are numbered from 1 (top-left) to 4 (bottom-right).",
    "Images are 336x336 px. You have 8 turns. Error: Score 0.512 (0 = an empty picture, 1 = the target)",
)


def _processor_class() -> type:
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without the video processor (which needs torchvision)."""

        def __init__(
            self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
        ):
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyProcessor


def image_only_processor(image_processor: Any, tokenizer: Any, chat_template: str | None = None) -> Any:
    """A Qwen2.5-VL processor of ``image_processor`` and ``tokenizer`` (no video processor)."""
    return _processor_class()(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def build_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained in-process, with the Qwen special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 8, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


@dataclass
class TinyVLM:
    """The model, its processor (image processor + tokenizer) and the tokenizer."""

    model: Any
    processor: Any

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a local model directory (config, weights, tokenizer, processor, chat template)."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        return path


#: The architectures the tiny model can be built in (Qwen2.5-VL by default).
TINY_ARCHITECTURES = ("qwen2_5_vl", "qwen3_vl")


def build_tiny_vlm(
    seed: int = 0, hidden: int = 64, layers: int = 2, image_side: int = 112, architecture: str = "qwen2_5_vl"
) -> TinyVLM:
    """The tiny random-weight Qwen2.5-VL (fp32, eval mode). ``image_side`` caps the pixels the
    processor keeps per image (a side of ``image_side`` px: 16 vision tokens at 112).
    ``architecture="qwen3_vl"`` builds a Qwen3-VL instead (16 px patches, interleaved multimodal
    rotary positions, deepstack visual features), with the same tokenizer and template."""
    import torch

    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {architecture!r}; choose one of {', '.join(TINY_ARCHITECTURES)}")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    patch = 14 if architecture == "qwen2_5_vl" else 16
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=(4 * patch) ** 2,
        max_pixels=image_side * image_side,
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = image_only_processor(image_processor, tokenizer, CHAT_TEMPLATE)
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision: dict[str, Any] = {
        "depth": 2,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_heads": 4,
        "out_hidden_size": hidden,
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    special = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    torch.manual_seed(seed)
    model: Any
    if architecture == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
        vision.update(window_size=56, fullatt_block_indexes=[1])
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
        ).eval()
    else:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        text.update(
            head_dim=hidden // 4,
            rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
        )
        vision.update(deepstack_visual_indexes=[0], num_position_embeddings=256)
        model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(text_config=text, vision_config=vision, **special)).eval()
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return TinyVLM(model, processor)
