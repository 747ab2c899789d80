"""Tiny random models of every supported architecture, built from configs (no download)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from interp.model.models import LoadedModel, load_model

CORPUS = [
    "The capital of France is Paris.",
    "La capitale de la France est Paris.",
    "Die Hauptstadt von Frankreich ist Paris.",
    "Столица Франции — Париж.",
    "法国的首都是巴黎。",
    "フランスの首都はパリです。",
    "프랑스의 수도는 파리입니다.",
    "عاصمة فرنسا هي باريس.",
    "फ़्रांस की राजधानी पेरिस है।",
    "Mji mkuu wa Ufaransa ni Paris.",
]
PROMPTS = [
    "The capital of France is",
    "La capitale",
    "法国的首都是",
    "Mji mkuu wa Ufaransa ni Paris na",
    "x",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a BOS token, trained in milliseconds on ``CORPUS``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


_COMMON = dict(vocab_size=320, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_DECODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    **_COMMON,
)
CONFIGS = {
    "gemma3_text": lambda: Gemma3TextConfig(
        **{**_DECODER, "num_key_value_heads": 1}, head_dim=16, final_logit_softcapping=30.0
    ),
    "llama": lambda: LlamaConfig(**_DECODER),
    "mistral": lambda: MistralConfig(**_DECODER),
    "qwen2": lambda: Qwen2Config(**_DECODER),
    "qwen3": lambda: Qwen3Config(**_DECODER, head_dim=16),
    "gpt2": lambda: GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=128, **_COMMON),
}


def save_tiny(arch: str, directory: Path, seed: int = 0) -> Path:
    """Write a random model of ``arch`` and its tokenizer in Hugging Face format."""
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(CONFIGS[arch]()).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def tiny_model(arch: str, seed: int = 0) -> LoadedModel:
    """A LoadedModel of architecture ``arch`` with random weights (float32, on CUDA if present).

    It goes through a directory so that it loads like a user's model (and TransformerLens, which
    reloads the tokenizer by path, can wrap it).
    """
    directory = Path(tempfile.mkdtemp(prefix=f"polylens-tiny-{arch}-"))
    return load_model(str(save_tiny(arch, directory, seed)))
