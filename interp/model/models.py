"""Load a causal LM (or an encoder) from an embedded name, a local directory, a GGUF or a hub id.

Whatever the source, the result is a ``LoadedModel``: one uniform view (blocks, final norm,
unembedding, tokenizer with left padding, chat template, device, dtype) over every architecture
that ``interp.model.architectures`` knows.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from interp.checks import check_device, read_file_bytes
from interp.errors import PolylensError
from interp.model.architectures import ADAPTERS, Adapter, adapter_for, get_submodule
from interp.model.batching import pad_batch
from interp.model.convert import (
    BUILT,
    EMBEDDED,
    check_gguf,
    convert_gguf_cached,
    embedded_dir,
    find_built,
    gguf_cache_dir,
)
from interp.model.dtypes import dtype_name, resolve_dtype
from interp.model.placement import execution_device, main_device, materialized_state

__all__ = ["DEFAULT_MODEL", "LoadedModel", "load_model", "model_class", "model_source"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
# A stated context length at least this large is transformers' "no limit" placeholder (1e30).
_NO_LIMIT = 10**9


@dataclass
class LoadedModel:
    """A Hugging Face causal LM or encoder with the uniform view every polylens analysis uses."""

    hf: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    adapter: Adapter = field(init=False)
    _backend_cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.adapter = adapter_for(self.hf.config.model_type)
        for path in (self.adapter.blocks, self.adapter.final_norm, self.adapter.unembed):
            if path is not None:  # an encoder has no final norm or unembedding
                get_submodule(self.hf, path)
        # polylens left-pads its own batches (pad_batch) for every model, so that position -1 is
        # every prompt's last real token. An encoder's tokenizer keeps its own side: a user's
        # tokenizer(..., padding=True) then stays right for BERT's absolute positions.
        if self.causal:
            self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.hf.eval()

    # -- the uniform view -------------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        return get_submodule(self.hf, self.adapter.blocks)

    @property
    def final_norm(self) -> nn.Module:
        """The norm the model applies before its unembedding (an encoder refuses)."""
        self.require_next_token("an analysis reading the final norm")
        return get_submodule(self.hf, self.adapter.final_norm)

    @property
    def unembed(self) -> nn.Linear:
        """The unembedding (``lm_head``; an encoder, loaded without a head, refuses)."""
        self.require_next_token("an analysis reading the unembedding")
        return get_submodule(self.hf, self.adapter.unembed)

    @property
    def causal(self) -> bool:
        """A causal LM; False for a bidirectional encoder (BERT, XLM-R)."""
        return self.adapter.causal

    @property
    def default_positions(self) -> str:
        """Positions read when none are given: ``last`` for a causal LM, ``mean`` for an encoder.

        The last token is the one a causal LM has read the whole prompt at; every token of an
        encoder sees the whole prompt and its last is a special token ([SEP], </s>), so an
        encoder is pooled over its real tokens.
        """
        return "last" if self.causal else "mean"

    @property
    def position_offset(self) -> int:
        """A prompt's first position id: 0, or ``pad id + 1`` (XLM-R's learned positions)."""
        return self.hf.config.pad_token_id + 1 if self.adapter.positions_after_pad else 0

    def require_next_token(self, what: str, *, remedy: str | None = None) -> None:
        """Refuse, in one line, ``what`` on an encoder: it reads next-token logits.

        The one check every next-token analysis calls before any heavy work (experiments
        through ``ExperimentConfig.load_model``); an encoder predicts no next token.

        Args:
            what: the analysis, for the message (``"the logit lens"``).
            remedy: what to do instead (default: read its layers, which an encoder has).
        """
        if self.causal:
            return
        raise PolylensError(
            f"model {self.name!r} is an encoder ({self.hf.config.model_type}): {what} needs "
            "next-token logits, which an encoder does not predict; "
            + (remedy or "read its layers instead (extraction, similarity, probes, neurons)")
        )

    @property
    def body(self) -> nn.Module:
        """Embeddings, blocks and final norm, without the unembedding."""
        return get_submodule(self.hf, self.adapter.body)

    @property
    def n_blocks(self) -> int:
        """Number of transformer blocks L; the residual stream has L + 1 layers."""
        return len(self.blocks)

    @property
    def n_layers(self) -> int:
        """Number of residual layers: the embedding output plus one after every block."""
        return self.n_blocks + 1

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return self.hf.config.get_text_config().hidden_size

    @property
    def softcap(self) -> float | None:
        """Final-logit soft-capping constant, where the architecture has one."""
        attr = self.adapter.softcap_attr
        return getattr(self.hf.config.get_text_config(), attr, None) if attr else None

    @property
    def logit_scale(self) -> float | None:
        """Constant the model's head multiplies its logits by, where the architecture has one."""
        attr = self.adapter.logit_scale_attr
        return getattr(self.hf.config.get_text_config(), attr, None) if attr else None

    @property
    def context_length(self) -> int | None:
        """Most tokens the model reads at once, or None where neither config nor tokenizer says.

        The config's ``max_position_embeddings`` (its text config's, for multimodal models),
        else the tokenizer's ``model_max_length`` when it states a real limit (transformers
        writes a huge placeholder when it knows none).
        """
        config = self.hf.config.get_text_config()
        positions = getattr(config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions < _NO_LIMIT:
            positions -= self.position_offset  # XLM-R's first positions are never a token's
        for value in (
            positions,
            getattr(self.tokenizer, "model_max_length", None),
        ):
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
                return value
        return None

    def check_context(
        self,
        lengths: Sequence[int],
        where: Callable[[int], str] = "prompt {}".format,
        *,
        remedy: str = "shorten or split it",
    ) -> None:
        """Refuse, before any forward pass, a sequence longer than ``context_length``.

        A longer prompt would run past the model's positions and, for a long enough text, try
        to allocate attention far beyond any memory.

        Args:
            lengths: token counts, one per sequence.
            where: names sequence i for the error (default ``"prompt i"``).
            remedy: what the user should do, for the error.

        Raises:
            PolylensError: one line naming the first sequence that is too long, its length and
                the limit.
        """
        limit = self.context_length
        if limit is None:
            return
        for i, n in enumerate(lengths):
            if n > limit:
                raise PolylensError(
                    f"{where(i)} is {n} tokens long, more than the {limit} tokens model "
                    f"{self.name!r} reads at once; {remedy}"
                )

    @property
    def device(self) -> torch.device:
        """Where inputs go and results are gathered: where the embedding computes.

        With a device map, that is accelerate's execution device (``interp.model.placement``).
        """
        return execution_device(self.hf.get_input_embeddings(), main_device(self.hf))

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights."""
        return next(self.hf.parameters()).dtype

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the weights: every tensor's name, shape, dtype, sum and a strided sample.

        Cheap (no full pass over a large model's bytes) yet changes with any re-initialisation.
        """
        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in sorted(materialized_state(self.hf).items()):
                flat = p.detach().reshape(-1).float().cpu()
                sample = flat[:: max(1, flat.numel() // 1024)]
                h.update(f"{name}{tuple(p.shape)}{p.dtype}{flat.sum().item():.6e}".encode())
                h.update(sample.numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def identity(self) -> dict[str, str]:
        """Model identity recorded in every artifact's provenance: name, weights, compute dtype.

        The dtype is named apart from the fingerprint (which hashes it too) so that a reader sees
        at a glance that a bfloat16 run's activations are not a float32 run's.
        """
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "dtype": dtype_name(self.dtype),
        }

    # -- text in ----------------------------------------------------------------------------
    def apply_chat_template(self, user_messages: Sequence[str]) -> list[str]:
        """Wrap each message as a single user turn, ready for the assistant's answer."""
        if self.tokenizer.chat_template is None:
            raise PolylensError(
                f"model {self.name!r} has no chat template; pass plain prompts or use an "
                "instruction-tuned model such as 'smollm2-135m-instruct'"
            )
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": m}], tokenize=False, add_generation_prompt=True
            )
            for m in user_messages
        ]

    def tokenize(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, unpadded, with the tokenizer's special tokens."""
        return self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]

    def padded_batches(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int | None = None,
        longest_first: bool = False,
    ) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
        """Tokenize ``prompts`` and yield ``(rows, batch)``: left-padded batches on the device.

        ``rows`` are the indices of the batch's prompts in ``prompts``; ``batch`` holds
        ``input_ids``, ``attention_mask`` and ``position_ids`` (see ``interp.model.batching``).

        Args:
            prompts: the texts, used verbatim.
            batch_size: prompts per batch (all in one batch when None).
            longest_first: sort by length, longest first, so that similar lengths share a batch
                (little padding) and memory peaks at the first batch.
        """
        ids = self.tokenize(prompts)
        self.check_context([len(x) for x in ids])
        order = list(range(len(ids)))
        if longest_first:
            order.sort(key=lambda i: -len(ids[i]))
        size = batch_size or max(1, len(ids))
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            yield rows, self.pad_batch([ids[i] for i in rows])

    def pad_batch(self, token_ids: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        """A left-padded batch of ``token_ids`` on the device (``interp.model.batching``).

        Position ids count real tokens from ``position_offset``, so a padded prompt reads the
        same positions as alone, whichever side its tokenizer pads.
        """
        batch = pad_batch(token_ids, self.tokenizer.pad_token_id, self.device)
        if self.position_offset:
            batch["position_ids"] = batch["position_ids"] + self.position_offset
        return batch

    def forward_batches(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int | None = None,
        longest_first: bool = False,
        body_only: bool = False,
        **forward_kwargs: object,
    ) -> Iterator[tuple[list[int], object]]:
        """Run the model on left-padded batches of ``prompts``; yields ``(rows, output)``.

        The one tokenize-pad-forward loop: it calls the Hugging Face modules themselves, so
        hooks held on them (reads, edits) act on every batch.

        Args:
            prompts: the texts, used verbatim.
            batch_size: prompts per forward pass (all at once when None).
            longest_first: see ``padded_batches``.
            body_only: run embeddings, blocks and final norm only (no unembedding); the output
                is then the body's (``last_hidden_state``), not logits.
            **forward_kwargs: passed to the forward call (e.g. ``use_cache=False``).
        """
        module = self.body if body_only else self.hf
        for rows, batch in self.padded_batches(
            prompts, batch_size=batch_size, longest_first=longest_first
        ):
            yield rows, module(**batch, **forward_kwargs)

    @torch.inference_mode()
    def logits(
        self, prompts: Sequence[str], *, batch_size: int | None = None
    ) -> Float[Tensor, "prompt vocab"]:
        """The model's own next-token logits at each prompt's last token (float32).

        ``batch_size`` prompts per forward pass; all at once when None.
        """
        self.require_next_token("LoadedModel.logits")
        # Only the last position's logits: a 262k-token vocabulary at every position would
        # cost more than the blocks (and B x T x V floats of memory).
        parts = [
            out.logits[:, -1].float()
            for _, out in self.forward_batches(prompts, batch_size=batch_size, logits_to_keep=1)
        ]
        return torch.cat(parts)

    @torch.inference_mode()
    def greedy_ids(
        self,
        batch: dict[str, Tensor],
        *,
        max_new_tokens: int,
        stops: Sequence[str] = (),
        use_cache: bool = True,
    ) -> Tensor:
        """The new token ids of the greedy continuation of one left-padded batch.

        A row that produced a stop string (or the end of its turn) is padded after it until the
        whole batch has; ``generate`` decodes and cuts the texts.
        """
        generated = self.hf.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=use_cache,
            stop_strings=list(stops) or None,
            tokenizer=self.tokenizer,
        )
        return generated[:, batch["input_ids"].shape[1] :]

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        stop: str | Sequence[str] | None = None,
        batch_size: int = 16,
        use_cache: bool = True,
        progress: bool = False,
    ) -> list[str]:
        """Greedy continuation of each prompt, on left-padded batches.

        Decoding runs the Hugging Face model's own forward at each step (no copy of the model),
        so edits held by hooks on its modules (``interp.intervene``) apply while it generates.

        Args:
            prompts: the texts, used verbatim (apply a chat template first if wanted).
            max_new_tokens: most tokens generated per prompt.
            stop: a string (or several) that ends a continuation: each text is cut before the
                first occurrence, and a batch stops once every row has produced one.
            batch_size: prompts per batch.
            use_cache: reuse keys and values across steps (each step then runs the new token
                only); False re-runs the whole sequence each step, for edits that address
                token positions of the full sequence.
            progress: show a tqdm bar.
        """
        self.require_next_token("generation")
        if max_new_tokens < 1 or batch_size < 1:
            raise PolylensError("generation needs max_new_tokens >= 1 and batch_size >= 1")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        texts: list[str] = [""] * len(prompts)
        n_batches = -(-len(prompts) // batch_size)
        batches = self.padded_batches(list(prompts), batch_size=batch_size)
        for rows, batch in tqdm(
            batches, total=n_batches, desc="generate", unit="batch", disable=not progress
        ):
            new = self.greedy_ids(
                batch, max_new_tokens=max_new_tokens, stops=stops, use_cache=use_cache
            )
            for row, text in zip(rows, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                texts[row] = cut_at(text, stops)
        return texts


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load a model from an embedded name, a local HF directory, a ``.gguf`` file or a hub id.

    Args:
        spec: ``gemma-3-270m`` (default), ``smollm2-135m-instruct``, a directory in Hugging Face
            format, a ``.gguf`` file, or a hub id such as ``Qwen/Qwen2.5-0.5B`` (only this form
            touches the network).
        device: ``cuda`` when available, else ``cpu``, unless given.
        dtype: the weights' compute dtype: ``float32`` unless given; ``float16``, ``bfloat16``,
            or ``"auto"``: the checkpoint's own dtype where a GPU computes, float32 on a CPU.
        device_map: instead of ``device``, spread the model with accelerate: ``"auto"`` (fill
            the GPUs, then the CPU, then ``offload_folder``) or a ``{module name: device}`` map
            (``0``, ``"cpu"``, ``"disk"``). Every analysis works on such a model: hooks run on
            each block's device and results are gathered on the embedding's.
        max_memory: with ``device_map``, the most each device may hold, e.g. ``{0: "20GiB",
            "cpu": "60GiB"}``.
        offload_folder: with ``device_map``, where weights offloaded to disk go.
    """
    if device_map is not None and device is not None:
        raise PolylensError("give either device or device_map, not both")
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise PolylensError("max_memory and offload_folder apply only with a device_map")
    device = torch.device(check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = torch.cuda.is_available() if device_map is not None else device.type == "cuda"
    resolve_dtype(dtype, on_gpu=False)  # a bad name is refused before anything is read
    placement = {}
    if device_map is not None:
        placement = {"device_map": device_map, "max_memory": device_keys(max_memory)}
        if offload_folder is not None:
            placement["offload_folder"] = str(offload_folder)
    source, name = model_source(spec)
    if isinstance(source, str):
        try:
            return _load(source, name, dtype, on_gpu, device, placement)
        except OSError as e:
            raise PolylensError(
                f"could not load hub model {source!r} (offline or not found: {first_line(e)}); "
                "pass a local directory or a .gguf file instead"
            ) from None
    try:
        return _load(source, name, dtype, on_gpu, device, placement)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        # Damaged or foreign files surface here as library errors several frames deep.
        raise PolylensError(
            f"could not load the model in {source} ({first_line(e)}); "
            "check that it is a complete Hugging Face model directory"
        ) from None


def _load(
    source: Path | str,
    name: str,
    dtype: str | torch.dtype | None,
    on_gpu: bool,
    device: torch.device,
    placement: dict,
) -> LoadedModel:
    """The config read once, then the weights in the resolved dtype and class, the tokenizer."""
    config = AutoConfig.from_pretrained(source)
    torch_dtype = resolve_dtype(dtype, on_gpu=on_gpu, checkpoint=checkpoint_dtype(config))
    auto, options = model_class(config)
    hf = auto.from_pretrained(source, config=config, dtype=torch_dtype, **options, **placement)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return LoadedModel(_placed(hf, device, placement), tokenizer, name)


def model_source(spec: str, *, weights: bool = True) -> tuple[Path | str, str]:
    """Where ``spec``'s files are, without reading weights: ``(directory or hub id, name)``.

    An embedded model or a ``.gguf`` file is converted first if it is not in the cache (once);
    a hub id comes back as text (only loading it touches the network). ``weights=False``
    accepts a directory that holds a config and a tokenizer only (enough to plan a run).
    """
    path = Path(spec).expanduser()
    if spec in EMBEDDED:
        return embedded_dir(EMBEDDED[spec]), spec
    if spec in BUILT:
        return find_built(spec), spec
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)
        try:
            return convert_gguf_cached(path, gguf_cache_dir(path)), path.stem
        except (OSError, ValueError, KeyError) as e:
            raise PolylensError(
                f"could not convert {path} ({first_line(e)}); is it a complete GGUF model?"
            ) from None
    if path.is_dir():
        _check_model_dir(path, weights=weights)
        return path, path.name
    if path.exists():
        raise PolylensError(f"{path} is neither a .gguf file nor a model directory")
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return spec, spec
    raise PolylensError(
        f"unknown model {spec!r}; use an embedded model ({', '.join(EMBEDDED)}), a built one "
        f"({', '.join(BUILT)}), "
        "a local directory, a .gguf file or a hub id like 'org/name'"
    )


_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_model_dir(path: Path, *, weights: bool = True) -> None:
    """A Hugging Face model directory: a JSON ``config.json`` naming its type, and weights."""
    config = path / "config.json"
    if not config.is_file():
        raise PolylensError(f"{path} has no config.json; point at a Hugging Face model directory")
    data = read_file_bytes(config, "model config")
    if data.startswith(codecs.BOM_UTF8):
        # transformers reads config.json as plain UTF-8: the mark would fail it several frames deep.
        raise PolylensError(
            f"{config} starts with a UTF-8 byte-order mark, which transformers cannot read; "
            "save it as UTF-8 without the mark"
        )
    try:
        values = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolylensError(
            f"{config} is not valid JSON ({first_line(e)}); restore the model's config.json"
        ) from None
    if not isinstance(values, dict) or "model_type" not in values:
        raise PolylensError(
            f"{config} has no model_type; restore the model's config.json from its source"
        )
    if weights and not any(next(path.glob(pattern), None) for pattern in _WEIGHTS):
        raise PolylensError(
            f"{path} has no weights (*.safetensors or *.bin); copy the model's weight files there"
        )


def cut_at(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


def device_keys(max_memory: dict | None) -> dict | None:
    """The ``max_memory`` accelerate reads: a GPU by its index, other devices by name.

    A config's YAML or the command line may give a GPU index as text.
    """
    if max_memory is None:
        return None
    return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in max_memory.items()}


def checkpoint_dtype(config: PretrainedConfig) -> torch.dtype | None:
    """The dtype a checkpoint's config states its weights in; None where it states none.

    A multimodal wrapper states it on its text model.
    """
    return config.dtype or config.get_text_config().dtype


def model_class(config: PretrainedConfig) -> tuple[type, dict]:
    """The auto class a model of ``config`` loads with, and the options it takes.

    A causal LM with its head, or, for an encoder family, the bare encoder without its pooler:
    every analysis that reads one needs only the body, which every checkpoint of the family has
    (masked-LM checkpoints such as mBERT and XLM-R, and sentence encoders, which ship no
    masked-LM head), while a head or pooler missing from a checkpoint would load random and
    change the fingerprint every load.
    """
    adapter = ADAPTERS.get(config.model_type)
    if adapter is not None and not adapter.causal:
        return AutoModel, {"add_pooling_layer": False}
    return AutoModelForCausalLM, {}


def _placed(hf: PreTrainedModel, device: torch.device, placement: dict) -> PreTrainedModel:
    """The loaded model on ``device``, unless accelerate placed it from a device map."""
    return hf if placement else hf.to(device)
