"""Tuned lens: one affine translator per layer, after Belrose et al. 2023.

Each translator is trained so that decoding the translated residual matches the model's final
next-token distribution (minimum KL).

Translator of layer l: ``h + W_l h + b_l`` with ``W_l = 0, b_l = 0`` at start, so an untrained
tuned lens is exactly the logit lens. The last layer keeps the identity (it is already exact).
Trained translators are saved in the polylens cache keyed by the model's fingerprint, with a
sealed ``provenance.json`` (written last) that records their sha256; loading checks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from interp.errors import PolylensError
from interp.extract import extract
from interp.lens.logit import decode_logits
from interp.metrics import kl_divergence
from interp.model.models import LoadedModel
from interp.storage.files import (
    CorruptFileError,
    load_safetensors,
    read_sealed_json,
    save_safetensors,
    write_sealed_json,
)
from interp.storage.paths import cache_dir
from interp.storage.provenance import provenance


class TunedLens(nn.Module):
    """Per-layer affine translators for layers ``0 .. n_layers - 2`` (the last is the identity)."""

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.weight = nn.Parameter(torch.zeros(n_layers - 1, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers - 1, d_model))

    def forward(self, h: Float[Tensor, "row d_model"], layer: int) -> Float[Tensor, "row d_model"]:
        """Translate residuals taken at ``layer`` toward the last layer's basis."""
        if layer == self.n_layers - 1:
            return h
        # The lens follows its input: residuals may sit on a GPU while the lens was built on CPU.
        w = self.weight[layer].to(h.device, h.dtype)
        b = self.bias[layer].to(h.device, h.dtype)
        return h + h @ w.T + b


@dataclass(frozen=True)
class TunedLensConfig:
    """How the translators are trained."""

    steps: int = 100
    """Optimizer steps."""
    tokens_per_step: int = 8
    """Token positions per step (every layer sees the same positions)."""
    lr: float = 1e-4
    """Adam learning rate."""
    weight_decay: float = 1e-3
    """L2 pull toward the identity translator."""
    seed: int = 0
    """Seed of the position sampling."""
    dataset: str = "parallel"
    """Bundled dataset whose text (all tokens, all languages) is the training data."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.tokens_per_step < 1 or self.lr <= 0:
            raise PolylensError("tuned lens needs steps >= 1, tokens_per_step >= 1 and lr > 0")


def kl_to_final(
    final_logp: Float[Tensor, "row vocab"], logp: Float[Tensor, "row vocab"]
) -> Float[Tensor, " row"]:
    """KL(final || lens) per row, in nats (``interp.metrics.kl_divergence``)."""
    return kl_divergence(final_logp, logp)


def _decode_logp(model: LoadedModel, h: Tensor) -> Tensor:
    return torch.log_softmax(decode_logits(model, h), dim=-1)


def training_residuals(
    model: LoadedModel, texts: list[str], *, store=None
) -> Float[Tensor, "token layer d_model"]:
    """Residuals of every token but the first of ``texts`` at every layer (store-cached).

    The first position (the BOS token, where there is one) is the same in every text.
    """
    acts = extract(model, texts, layers="all", positions="all", store=store, progress=True)
    keep = torch.ones(acts.flat.shape[0], dtype=torch.bool)
    keep[acts.offsets[:-1]] = False
    return acts.flat[keep]


def train_tuned_lens(
    model: LoadedModel,
    residuals: Float[Tensor, "token layer d_model"],
    config: TunedLensConfig = TunedLensConfig(),
) -> tuple[TunedLens, list[float]]:
    """Fit translators on ``residuals`` (the last layer is the target); returns the loss curve."""
    n_layers = residuals.shape[1]
    if n_layers != model.n_layers:
        raise PolylensError(f"residuals have {n_layers} layers, the model {model.n_layers}")
    lens = TunedLens(n_layers, model.d_model).to(model.device)
    opt = torch.optim.Adam(lens.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    frozen = [p for p in model.hf.parameters() if p.requires_grad]
    for p in frozen:  # gradients flow through the model's norm and unembedding, not into them
        p.requires_grad_(False)
    try:
        losses = _fit(model, lens, opt, residuals, config, gen)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return lens.eval(), losses


def _fit(model, lens, opt, residuals, config, gen) -> list[float]:
    n_layers = residuals.shape[1]
    losses = []
    for _ in tqdm(range(config.steps), desc="tuned lens", unit="step"):
        rows = torch.randint(0, residuals.shape[0], (config.tokens_per_step,), generator=gen)
        batch = residuals[rows].to(model.device, torch.float32)
        with torch.no_grad():
            target = _decode_logp(model, batch[:, -1])
        # All layers in one decode: the unembedding is read once per step, not once per layer.
        translated = torch.cat([lens(batch[:, layer], layer) for layer in range(n_layers - 1)])
        logp = _decode_logp(model, translated)
        loss = kl_to_final(target.repeat(n_layers - 1, 1), logp).mean()
        reg = config.weight_decay * (lens.weight.square().sum() + lens.bias.square().sum())
        opt.zero_grad()
        (loss + reg).backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def kl_per_layer(
    model: LoadedModel,
    residuals: Float[Tensor, "token layer d_model"],
    lens: TunedLens | None = None,
) -> list[float]:
    """Mean KL(final || decoded layer) per layer: tuned lens, or logit lens when ``lens=None``."""
    x = residuals.to(model.device, torch.float32)
    n_layers = x.shape[1]
    totals = torch.zeros(n_layers)
    for start in range(0, x.shape[0], 16):
        chunk = x[start : start + 16]
        target = _decode_logp(model, chunk[:, -1])
        h = torch.cat(
            [
                lens(chunk[:, layer], layer) if lens is not None else chunk[:, layer]
                for layer in range(n_layers)
            ]
        )  # [layer * token, d]: one decode for all layers
        kl = kl_to_final(target.repeat(n_layers, 1), _decode_logp(model, h))
        totals += kl.view(n_layers, -1).sum(1).cpu()
    return (totals / x.shape[0]).tolist()


def _path(model: LoadedModel, config: TunedLensConfig) -> Path:
    tag = (
        f"{model.fingerprint}-{config.dataset}-{config.steps}x{config.tokens_per_step}"
        f"-lr{config.lr:g}-wd{config.weight_decay:g}"
    )
    return cache_dir() / "tuned_lens" / model.name.replace("/", "--") / f"{tag}-s{config.seed}"


def training_texts(config: TunedLensConfig = TunedLensConfig()) -> list[str]:
    """The texts the translators train on: the ``train`` split of ``config.dataset``."""
    from interp.data import load, prompts_of

    return prompts_of(load(config.dataset, split="train"))


def load_or_train_tuned_lens(
    model: LoadedModel, config: TunedLensConfig = TunedLensConfig(), *, store=None
) -> TunedLens:
    """The cached tuned lens of this model and config, trained (on held-out-free data) if absent.

    Training uses the ``train`` split of ``config.dataset`` in every language it covers.
    """
    from interp.data.loader import dataset_sha256

    model.require_next_token("the tuned lens")  # before reading its training residuals
    path = _path(model, config)
    weights, record = path / "translators.safetensors", path / "provenance.json"
    if record.is_file():  # written last: translators without it are a killed run's, retrained
        return _load_cached(model, weights, record).to(model.device).eval()
    residuals = training_residuals(model, training_texts(config), store=store)
    lens, losses = train_tuned_lens(model, residuals, config)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in lens.state_dict().items()}
    record_fields = provenance(
        model.identity,
        config=asdict(config),
        dataset_sha256=dataset_sha256(config.dataset),
        final_loss=losses[-1],
        first_loss=losses[0],
        translators_sha256=save_safetensors(weights, state),
    )
    write_sealed_json(record, record_fields)
    return lens


def _load_cached(model: LoadedModel, weights: Path, record: Path) -> TunedLens:
    """The cached translators, after checking them against the sha256 in their provenance."""
    remedy = f"delete {record.parent} to retrain the tuned lens"
    info = read_sealed_json(record, remedy=remedy)
    if not isinstance(info.get("translators_sha256"), str):
        raise CorruptFileError(record, "no translators_sha256", remedy)
    lens = TunedLens(model.n_layers, model.d_model)
    lens.load_state_dict(load_safetensors(weights, info["translators_sha256"], remedy=remedy))
    return lens


def evaluate_tuned_lens(
    model: LoadedModel,
    lens: TunedLens,
    config: TunedLensConfig = TunedLensConfig(),
    *,
    max_tokens: int = 512,
    store=None,
) -> list[dict]:
    """Held-out KL per layer, tuned lens vs logit lens.

    Measured on ``max_tokens`` tokens (sampled with the config's seed) of the ``test`` split.
    """
    from interp.data import load, prompts_of

    model.require_next_token("the tuned lens")
    texts = prompts_of(load(config.dataset, split="test"))
    residuals = training_residuals(model, texts, store=store)
    if residuals.shape[0] > max_tokens:
        gen = torch.Generator().manual_seed(config.seed)
        residuals = residuals[torch.randperm(residuals.shape[0], generator=gen)[:max_tokens]]
    tuned, logit = kl_per_layer(model, residuals, lens), kl_per_layer(model, residuals)
    return [
        {"layer": layer, "kl_logit_lens": a, "kl_tuned_lens": b}
        for layer, (a, b) in enumerate(zip(logit, tuned))
    ]
