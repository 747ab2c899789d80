"""Edits of a forward pass at named sites: ablation, activation addition, patching, any function.

```python
from interp import intervene
from interp.interventions import Ablate, Add, Patch

with intervene(model, {"resid_pre.*": Ablate(d), "attn_out.*": Ablate(d), "mlp_out.*": Ablate(d)}):
    model.logits(prompts)  # every forward pass inside sees the edits: logits, extract, generate
```

Edits are held by PyTorch hooks on the model's own modules for as long as the context is open,
and removed in ``finally``. Several sites and several edits per site compose, in the order given.
Positions count from the end of the (left-padded) sequence: ``-1`` is every prompt's last token.
During KV-cached generation each new token is a forward pass of length one: ``Ablate``, ``Add``
and ``Apply`` apply to it too; ``Patch`` edits the prompt's forward pass only (the cache carries
its effect forward).

``orthogonalize(model, d)`` bakes a directional ablation into a copy's weights, where the
architecture allows it (not Gemma 2/3: their post-sublayer norms re-introduce the direction).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import PolylensError
from interp.model.architectures import get_submodule
from interp.model.models import LoadedModel
from interp.model.placement import is_offloaded
from interp.model.sites import Site, hooked, parse_sites, site_width

PositionsSpec = int | Sequence[int] | None
"""``None`` (every position) or positions counted from the end (``-1`` = the last token)."""


@dataclass
class ForwardState:
    """What every edit may need to know about the forward pass it is in."""

    cached_step: bool = False
    """True in a KV-cached generation step (only the new token runs)."""


def _positions(spec: PositionsSpec) -> list[int] | None:
    if spec is None:
        return None
    positions = [spec] if isinstance(spec, int) else list(spec)
    if not positions or any(p >= 0 for p in positions):
        raise PolylensError(
            f"positions {spec!r}: batches are left-padded, so count positions from the end "
            "(-1 is every prompt's last token), or pass None for every position"
        )
    return positions


def _unit(direction: Tensor) -> Tensor:
    norm = direction.float().norm()
    if direction.dim() != 1 or not torch.isfinite(norm) or norm == 0:
        raise PolylensError("a direction must be a finite, non-zero vector of shape [d]")
    return direction.float() / norm


class Edit:
    """Base of every edit: ``edit(x, state)`` returns the edited site tensor."""

    width: int | None = None
    """The last dimension the edit expects (checked against the site), where it has one."""

    def __call__(self, x: Float[Tensor, "batch seq width"], state: ForwardState) -> Tensor:
        """The edited tensor (a new tensor; the input is left as it is)."""
        raise NotImplementedError

    def _like(self, key: str, tensor: Tensor, x: Tensor) -> Tensor:
        """``tensor`` on ``x``'s device and dtype, converted once per device and dtype.

        Edits run in hooks on every forward pass: converting on each call would be a
        synchronising host-to-GPU copy per hooked site per batch.
        """
        cache = self.__dict__.setdefault("_converted", {})
        slot = (key, x.device, x.dtype)
        if slot not in cache:
            cache[slot] = tensor.to(x.device, x.dtype)
        return cache[slot]


@dataclass
class Ablate(Edit):
    """Project ``direction`` out: ``x - (x . d) d`` with ``d`` the unit direction."""

    direction: Float[Tensor, " width"]

    def __post_init__(self) -> None:
        self.unit = _unit(self.direction)
        self.width = self.unit.shape[0]

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        # In float32, rounded once: with a half-precision d and rounded steps, roundings of the
        # whole (x . d) would stay along d; one rounding of the result leaves <= eps/2 of it.
        xf = x.float()
        d = self._like("unit", self.unit, xf)
        return (xf - (xf @ d).unsqueeze(-1) * d).to(x.dtype)


@dataclass
class Add(Edit):
    """Activation addition: ``x + coeff * vector`` at ``positions`` (default: every position)."""

    vector: Float[Tensor, " width"]
    coeff: float = 1.0
    positions: PositionsSpec = None

    def __post_init__(self) -> None:
        if self.vector.dim() != 1:
            raise PolylensError("Add needs a vector of shape [d]")
        self._positions = _positions(self.positions)
        self._delta = self.coeff * self.vector.float()
        self.width = self.vector.shape[0]

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        delta = self._like("delta", self._delta, x)
        if self._positions is None:
            return x + delta
        out = x.clone()
        for p in self._positions:
            if -p <= x.shape[1]:  # a cached step has one position: only -1 exists there
                out[:, p] += delta
        return out


@dataclass
class Patch(Edit):
    """Replace the site's values with ``values`` from another run (e.g. another language).

    ``values`` is ``[batch, seq, width]`` with ``positions=None`` (same shapes as the patched
    run), or ``[batch, len(positions), width]`` / ``[batch, width]`` (one position) otherwise.
    """

    values: Tensor
    positions: PositionsSpec = None

    def __post_init__(self) -> None:
        self._positions = _positions(self.positions)
        if self._positions is not None and self.values.dim() == 2:
            self.values = self.values.unsqueeze(1)
        self.width = self.values.shape[-1]

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        if state.cached_step:
            return x
        values = self._like("values", self.values, x)
        if self._positions is None:
            if values.shape != x.shape:
                raise PolylensError(
                    f"Patch values have shape {tuple(values.shape)}, the site {tuple(x.shape)}; "
                    "patch runs of the same batch and length, or give positions"
                )
            return values.clone()
        if values.shape[0] != x.shape[0] or values.shape[1] != len(self._positions):
            raise PolylensError(
                f"Patch values have shape {tuple(values.shape)}; need [batch={x.shape[0]}, "
                f"positions={len(self._positions)}, {x.shape[-1]}]"
            )
        out = x.clone()
        for j, p in enumerate(self._positions):
            out[:, p] = values[:, j]
        return out


@dataclass
class Apply(Edit):
    """Any function of the site tensor: ``fn(x) -> x'`` of the same shape."""

    fn: Callable[[Tensor], Tensor]
    width: int | None = field(default=None, init=False)

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        out = self.fn(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise PolylensError(
                f"Apply's function must return a tensor of the site's shape {tuple(x.shape)}"
            )
        return out


Edits = Mapping[str | Site, Edit | Sequence[Edit]]


@contextmanager
def intervene(model: LoadedModel, edits: Edits) -> Iterator[None]:
    """Hold ``edits`` (``{site or wildcard: edit or [edits]}``) on every forward pass inside.

    An empty mapping changes nothing. Edits are checked against their sites' widths first, and
    removed in ``finally`` even when a forward pass raises.
    """
    plan: list[tuple[Site, list[Edit]]] = []
    for spec, given in edits.items():
        chain = [given] if isinstance(given, Edit) else list(given)
        for site in parse_sites(model, spec):
            width = site_width(model, site)
            for edit in chain:
                if not isinstance(edit, Edit):
                    raise PolylensError(f"site {site}: {edit!r} is not an edit (Ablate, Add, ...)")
                if edit.width is not None and edit.width != width:
                    raise PolylensError(
                        f"{type(edit).__name__} at {site} has width {edit.width}, the site {width}"
                    )
            plan.append((site, chain))
    if not plan:
        yield
        return
    state = ForwardState()

    def observe(_module: nn.Module, _args: tuple, kwargs: dict) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        state.cached_step = cache is not None and cache.get_seq_length() > 0

    def apply(chain: list[Edit]) -> Callable[[Tensor], Tensor]:
        def run(x: Tensor) -> Tensor:
            for edit in chain:
                x = edit(x, state)
            return x

        return run

    body_hook = model.body.register_forward_pre_hook(observe, with_kwargs=True)
    try:
        with hooked(model, [(site, apply(chain)) for site, chain in plan]):
            yield
    finally:
        body_hook.remove()


def directional_ablation(direction: Float[Tensor, " d_model"]) -> dict[str, Edit]:
    """Edits that keep ``direction`` out of the residual stream everywhere (Arditi et al. 2024).

    The embeddings handed to block 0 and everything each block writes are ablated, so no
    residual layer has a component along the direction.
    """
    ablate = Ablate(direction)
    return {"resid_pre.*": ablate, "attn_out.*": ablate, "mlp_out.*": ablate}


@torch.no_grad()
def orthogonalize(model: LoadedModel, direction: Float[Tensor, " d_model"]) -> LoadedModel:
    """A copy of ``model`` whose weights write nothing along ``direction``.

    Embeddings, attention output projections and MLP down projections (every expert's, for a
    mixture of experts; weights and biases) are projected; the unembedding is untied first where
    it shares the embedding's weights. For the families this supports, its logits equal those
    under ``directional_ablation``.
    """
    adapter = model.adapter
    if is_offloaded(model.hf):
        raise PolylensError(
            f"cannot orthogonalize {model.name}: some of its weights are offloaded (device_map); "
            "use intervene(model, directional_ablation(direction)) instead"
        )
    if adapter.orthogonalize_refusal:
        raise PolylensError(
            f"cannot orthogonalize {model.name}: {model.hf.config.model_type} "
            f"{adapter.orthogonalize_refusal}; use intervene(model, "
            "directional_ablation(direction)) instead"
        )
    d = _unit(direction)
    if d.shape[0] != model.d_model:
        raise PolylensError(f"direction has size {d.shape[0]}, the model d_model={model.d_model}")
    hf = copy.deepcopy(model.hf)
    unembed, embed = get_submodule(hf, adapter.unembed), get_submodule(hf, adapter.embed)
    if unembed.weight is embed.weight:  # tied: the unembedding must keep reading the direction
        unembed.weight = nn.Parameter(unembed.weight.detach().clone())
        hf.config.tie_word_embeddings = False
    for path in (adapter.embed, *adapter.extra_embeds):
        _project_rows(get_submodule(hf, path).weight, d)
    for block in get_submodule(hf, adapter.blocks):
        for path in adapter.writers:
            _project_writer(_writer(block, path), d)
    return LoadedModel(hf, model.tokenizer, f"{model.name}+orthogonalized")


def _project_rows(weight: Tensor, d: Tensor) -> None:
    """Remove ``d`` from every row of ``weight [n, d_model]``, in place (float32, rounded once)."""
    w, dd = weight.float(), d.to(weight.device, torch.float32)
    weight.copy_(w - torch.outer(w @ dd, dd))


def _writer(block: nn.Module, path: str) -> nn.Module | nn.Parameter:
    """The module, or fused experts' weight, at ``path`` inside a block."""
    owner, _, name = path.rpartition(".")
    parent = get_submodule(block, owner) if owner else block
    weight = getattr(parent, name, None)
    return weight if isinstance(weight, nn.Parameter) else get_submodule(block, path)


def _project_writer(module: nn.Module | nn.Parameter, d: Tensor) -> None:
    """Make a projection into the residual stream write nothing along ``d``, in place."""
    # Each projection in float32 with the float32 direction, rounded to the weights' dtype once
    # (in bfloat16, projecting onto a rounded direction in rounded steps leaves more behind).
    if isinstance(module, nn.Parameter):  # fused experts [expert, d_model, d_expert]: x W[e]^T
        w, dd = module.float(), d.to(module.device, torch.float32)
        module.copy_(w - dd[:, None] * (dd @ w)[:, None, :])
        return
    dd = d.to(module.weight.device, torch.float32)
    if isinstance(module, nn.Linear):  # weight [d_model, in]: output = x W^T
        w = module.weight.float()
        module.weight.copy_(w - torch.outer(dd, dd @ w))
    else:  # GPT-2's Conv1D, weight [in, d_model]: output = x W
        _project_rows(module.weight, d)
    if getattr(module, "bias", None) is not None:
        b = module.bias.float()
        module.bias.copy_(b - (b @ dd) * dd)
