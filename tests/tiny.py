"""Tiny random models of every supported architecture, built from configs (no download)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BloomConfig,
    CohereConfig,
    Gemma3Config,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Olmo2Config,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
    SiglipVisionConfig,
    XGLMConfig,
    XLMRobertaConfig,
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


def tiny_tokenizer(special: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a BOS token, trained in milliseconds on ``CORPUS``.

    ``special``: more special tokens (single ids), e.g. Gemma's turn markers.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<bos>", "<eos>", *special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        additional_special_tokens=list(special),
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
    # The multimodal wrapper of Gemma 3 4B-27B: its text model and a one-layer vision tower. The
    # text config's soft-cap, which the wrapper's head never applies, checks the lens ignores it.
    "gemma3": lambda: Gemma3Config(
        text_config=Gemma3TextConfig(
            **{**_DECODER, "num_key_value_heads": 1}, head_dim=16, final_logit_softcapping=30.0
        ),
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
        **_COMMON,
    ),
    "bloom": lambda: BloomConfig(hidden_size=64, n_layer=3, n_head=4, **_COMMON),
    "xglm": lambda: XGLMConfig(
        d_model=64,
        ffn_dim=128,
        num_layers=3,
        attention_heads=4,
        max_position_embeddings=128,
        **_COMMON,
    ),
    "olmo2": lambda: Olmo2Config(**_DECODER),
    "phi3": lambda: Phi3Config(**_DECODER),
    # logit_scale far from Cohere's 0.0625 default, so a lens without it would be far off.
    "cohere": lambda: CohereConfig(**_DECODER, logit_scale=4.0),
    "mixtral": lambda: MixtralConfig(**_DECODER, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": lambda: Qwen2MoeConfig(
        **_DECODER,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
    ),
}


def save_tiny(arch: str, directory: Path, seed: int = 0, special: tuple[str, ...] = ()) -> Path:
    """Write a random model of ``arch`` and its tokenizer in Hugging Face format."""
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(CONFIGS[arch]()).save_pretrained(directory)
    tiny_tokenizer(special).save_pretrained(directory)
    return directory


def tiny_model(arch: str, seed: int = 0) -> LoadedModel:
    """A LoadedModel of architecture ``arch`` with random weights (float32, on CUDA if present).

    It goes through a directory so that it loads like a user's model (and TransformerLens, which
    reloads the tokenizer by path, can wrap it).
    """
    directory = Path(tempfile.mkdtemp(prefix=f"polylens-tiny-{arch}-"))
    return load_model(str(save_tiny(arch, directory, seed)))


# Encoders: saved as masked-LM checkpoints (``bert.*`` / ``roberta.*`` and a head), as mBERT and
# XLM-R are published, so loading exercises the bare encoder load that drops the head.
_ENCODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    vocab_size=320,
    pad_token_id=0,
)
ENCODER_CONFIGS = {
    "bert": lambda: BertConfig(**_ENCODER, max_position_embeddings=128),
    # XLM-R's learned positions start after the pad id (0 here, 1 in XLM-R's own vocabulary).
    "xlm-roberta": lambda: XLMRobertaConfig(
        **_ENCODER, bos_token_id=1, eos_token_id=2, max_position_embeddings=129
    ),
}


def tiny_encoder_tokenizer() -> PreTrainedTokenizerFast:
    """``tiny_tokenizer`` framing text as an encoder's: ``<bos> text <eos>`` ([CLS] .. [SEP])."""
    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)]
    )
    return tokenizer


def save_tiny_encoder(arch: str, directory: Path, seed: int = 0) -> Path:
    """Write a random masked-LM checkpoint of encoder ``arch`` and its tokenizer."""
    torch.manual_seed(seed)
    AutoModelForMaskedLM.from_config(ENCODER_CONFIGS[arch]()).save_pretrained(directory)
    tiny_encoder_tokenizer().save_pretrained(directory)
    return directory


def tiny_encoder(arch: str, seed: int = 0) -> LoadedModel:
    """A LoadedModel of encoder ``arch`` (``bert``, ``xlm-roberta``) with random weights."""
    directory = Path(tempfile.mkdtemp(prefix=f"polylens-tiny-{arch}-"))
    return load_model(str(save_tiny_encoder(arch, directory, seed)))
