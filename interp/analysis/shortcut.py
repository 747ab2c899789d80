"""The final-layer linear shortcut ("Lost in Multilinguality", Wang et al. 2025).

For a layer ``l``, an affine map from the layer-``l`` residual at a prompt's last token to the
final residual (layer ``L``, the raw residual after the last block) stands in for blocks
``l .. L-1``. Decoded with the model's own ``final_norm -> unembed`` (``interp.lens``), it skips
the last layers, where the paper finds the transition from a language-independent concept space
to the output language (and the errors that make answers inconsistent across languages).

Two estimators:

- **least squares** (``fit_least_squares``): ``h_L ~ W h_l + b`` on a training split, solved in
  float64. Residuals are wide (d_model = 640 for Gemma 3 270M) and training splits are often
  smaller, so the normal equations are singular without a ridge term: ``W`` minimises
  ``sum ||h_L - W h_l - b||^2 + lam ||W||_F^2`` with ``lam = ridge * trace(X^T X) / d``
  (``ridge`` relative to the mean eigenvalue, so it means the same at every layer's scale).
- **mean Jacobian** (``mean_jacobian``), the paper's estimator (taken from the linear
  relational embeddings of Hernandez et al. 2024): ``W`` = the mean over prompts of
  ``d h_L / d h_l`` at the last token, ``b`` = the mean of ``h_L - J h_l`` (each prompt's
  first-order offset). Both are exact for a model that is affine from layer ``l`` on.

The paper's scaling factor ``beta`` multiplies the linear part only: the mapped state is
``beta * W h_l + b`` (the paper's code: ``z = beta * (weight @ h) + bias``, default 2.25 for its
Llama 2 layer); ``beta = 1`` is the fitted map itself.

``shortcut_edits`` applies the map on the forward pass: the final residual at the prompt's last
position is replaced by the mapped layer-``l`` state of that position, so logits, candidate
scoring and generation run under it. The edit holds on the prompt's pass only: in KV-cached
steps (generated or teacher-forced continuation tokens) the model runs unchanged. Since the
final residual feeds nothing but the unembedding, the shortcut changes exactly one distribution:
the first answer token's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import Edit, ForwardState
from interp.lens.logit import decode_logits
from interp.model.footprint import Pass
from interp.model.models import LoadedModel
from interp.model.sites import hooked, layer_site


@dataclass
class AffineMap:
    """``h_L ~ W h_l + b`` from residual layer ``layer`` to the final layer (float64)."""

    layer: int
    weight: Float[Tensor, "d_out d_in"]
    bias: Float[Tensor, " d_out"]
    method: str
    """``least_squares``, ``jacobian`` or ``identity``."""
    n_prompts: int = 0
    """How many prompts the map was estimated on."""

    _on: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(
        self, h: Float[Tensor, "row d_in"], *, beta: float = 1.0
    ) -> Float[Tensor, "row d_out"]:
        """``beta * W h + b`` in ``h``'s dtype and device (computed in float64)."""
        # Edits call this on every forward pass: copy the map to a device once, not per call.
        if h.device not in self._on:
            self._on[h.device] = (self.weight.to(h.device), self.bias.to(h.device))
        w, b = self._on[h.device]
        return (beta * (h.double() @ w.T) + b).to(h.dtype)


def identity_map(layer: int, d_model: int) -> AffineMap:
    """The map that changes nothing (at the last layer, the model itself)."""
    eye = torch.eye(d_model, dtype=torch.float64)
    return AffineMap(layer, eye, torch.zeros(d_model, dtype=torch.float64), "identity")


def fit_least_squares(
    h_in: Float[Tensor, "prompt d_in"],
    h_out: Float[Tensor, "prompt d_out"],
    *,
    layer: int,
    ridge: float = 1e-3,
) -> AffineMap:
    """Ridge least squares ``h_out ~ W h_in + b`` in float64 (see the module docstring).

    The intercept is fitted unpenalised (both sides centred first). With fewer prompts than
    dimensions the dual form ``W = Y^T (X X^T + lam I)^-1 X`` is solved (n x n instead of d x d).
    """
    if h_in.shape[0] != h_out.shape[0] or h_in.dim() != 2 or h_out.dim() != 2:
        raise PolylensError("least squares needs [prompt, d] inputs and outputs, same prompts")
    n, d = h_in.shape
    if n < 2:
        raise PolylensError("least squares needs at least 2 training prompts")
    if ridge < 0:
        raise PolylensError("ridge must be >= 0")
    x, y = h_in.double().cpu(), h_out.double().cpu()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    lam = ridge * float((xc * xc).sum()) / d
    if n < d:
        gram = xc @ xc.T + lam * torch.eye(n, dtype=torch.float64)
        weight = torch.linalg.lstsq(gram, yc).solution.T @ xc
    else:
        gram = xc.T @ xc + lam * torch.eye(d, dtype=torch.float64)
        weight = torch.linalg.lstsq(gram, xc.T @ yc).solution.T
    return AffineMap(layer, weight, y_mean - weight @ x_mean, "least_squares", n)


@contextmanager
def _frozen(model: LoadedModel) -> Iterator[None]:
    """Parameters need no gradients for a Jacobian with respect to activations."""
    params = [p for p in model.hf.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def prompt_jacobian(
    model: LoadedModel, prompt: str, layer: int, *, chunk_size: int = 128
) -> tuple[Float[Tensor, "d_model d_model"], Float[Tensor, " d_model"], Float[Tensor, " d_model"]]:
    """``d h_L / d h_l`` at ``prompt``'s last token, with ``h_l`` and ``h_L`` there (float64).

    The residual at the last token affects no other position (causal attention), so the prefix
    runs once into a KV cache and only the last token is re-run, ``chunk_size`` copies at a time:
    copy ``k`` takes the gradient of output coordinate ``k``, so one backward pass gives
    ``chunk_size`` rows of the Jacobian.
    """
    final, d = model.n_blocks, model.d_model
    ids = model.tokenize([prompt])[0]
    if len(ids) < 2:
        raise PolylensError(f"prompt {prompt!r} is too short for a Jacobian (needs 2 tokens)")
    dev = model.device
    if layer == final:  # the identity; one forward gives h_L
        h = extract(model, [prompt], layers=[final], progress=False).layer(final)[0].double()
        return torch.eye(d, dtype=torch.float64), h, h.clone()
    prefix = torch.tensor([ids[:-1]], device=dev)
    last = torch.tensor([ids[-1:]], device=dev)
    site_in, site_out = layer_site(layer), layer_site(final)
    with torch.no_grad():
        cache = model.body(input_ids=prefix, use_cache=True).cache
    captured: dict[str, Tensor] = {}

    def take_out(x: Tensor) -> None:
        captured["out"] = x

    rows = []
    with _frozen(model):
        for start in range(0, d, chunk_size):
            k = min(chunk_size, d - start)
            step_cache = copy.deepcopy(cache)
            step_cache.batch_repeat_interleave(k)
            holder: dict[str, Tensor] = {}

            def take_in(x: Tensor, holder=holder) -> Tensor:
                # Every copy starts from the model's own value; each is its own leaf.
                holder["h"] = x.detach().clone().requires_grad_(True)
                return holder["h"]

            with hooked(model, [(site_in, take_in), (site_out, take_out)]):
                model.body(
                    input_ids=last.expand(k, 1),
                    attention_mask=torch.ones(k, len(ids), dtype=torch.long, device=dev),
                    position_ids=torch.full((k, 1), len(ids) - 1, device=dev),
                    cache=step_cache,
                    use_cache=True,
                )
            out = captured["out"][:, -1]  # [k, d]
            picked = out[torch.arange(k), torch.arange(start, start + k)]
            (grad,) = torch.autograd.grad(picked.sum(), holder["h"])
            rows.append(grad[:, -1].double().cpu())
            h_in = holder["h"][0, -1]
    return torch.cat(rows), h_in.detach().double().cpu(), out[0].detach().double().cpu()


def jacobian_passes(
    model: LoadedModel, prompts: Sequence[str], layer: int, *, chunk_size: int = 128
) -> tuple[Pass, ...]:
    """The forward passes ``mean_jacobian`` makes, for ``polylens plan``.

    Per prompt: its prefix once, then ``d_model`` copies of its last token, ``chunk_size`` per
    pass, each pass followed by a backward pass (about twice a forward's work, not counted);
    at the final layer, one plain pass per prompt.
    """
    lengths = [len(ids) for ids in model.tokenize(prompts)] if prompts else []
    name = f"jacobian at layer {layer}"
    if layer == model.n_blocks:
        return (Pass(f"{name}: final states", tuple(lengths), 1),)
    rows = (1,) * (model.d_model * len(lengths))
    return (
        Pass(f"{name}: prefixes", tuple(n - 1 for n in lengths), 1),
        Pass(f"{name}: last token per output row (+ backward)", rows, chunk_size),
    )


def mean_jacobian(
    model: LoadedModel,
    prompts: Sequence[str],
    layer: int,
    *,
    chunk_size: int = 128,
    progress: bool = False,
) -> AffineMap:
    """The paper's estimator: mean Jacobian ``W`` and mean first-order offset ``b``."""
    if not prompts:
        raise PolylensError("the mean Jacobian needs at least one prompt")
    weight = torch.zeros(model.d_model, model.d_model, dtype=torch.float64)
    bias = torch.zeros(model.d_model, dtype=torch.float64)
    for prompt in tqdm(prompts, desc=f"jacobian l={layer}", disable=not progress):
        jac, h_in, h_out = prompt_jacobian(model, prompt, layer, chunk_size=chunk_size)
        weight += jac
        bias += h_out - jac @ h_in
    n = len(prompts)
    return AffineMap(layer, weight / n, bias / n, "jacobian", n)


def shortcut_logits(
    model: LoadedModel, h: Float[Tensor, "row d_model"], amap: AffineMap, *, beta: float = 1.0
) -> Float[Tensor, "row vocab"]:
    """Next-token logits of the mapped state: ``final_norm -> unembed`` (-> soft-cap)."""
    return decode_logits(model, amap(h.to(model.device, torch.float32), beta=beta))


class _CaptureLast(Edit):
    """Keeps the site's last-position value of the prompt's pass; changes nothing."""

    def __init__(self) -> None:
        self.value: Tensor | None = None

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        if not state.cached_step:
            self.value = x[:, -1]
        return x


class _ReplaceLast(Edit):
    """Replaces the last position (prompt's pass only) with the map of a captured value."""

    def __init__(self, source: _CaptureLast, amap: AffineMap, beta: float) -> None:
        self.source, self.amap, self.beta = source, amap, beta
        self.width = amap.weight.shape[0]

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        if state.cached_step:
            return x
        if self.source.value is None or self.source.value.shape[0] != x.shape[0]:
            raise PolylensError("the shortcut's source layer was not seen in this forward pass")
        out = x.clone()
        out[:, -1] = self.amap(self.source.value, beta=self.beta).to(x.dtype)
        return out


def shortcut_edits(model: LoadedModel, amap: AffineMap, *, beta: float = 1.0) -> dict:
    """Edits for ``interp.intervene`` that put the shortcut on the forward pass.

    The final residual at the prompt's last position becomes ``beta * W h_l + b`` of the same
    position's layer-``l`` residual (see the module docstring).
    """
    if amap.weight.shape != (model.d_model, model.d_model):
        raise PolylensError(
            f"the shortcut map is {tuple(amap.weight.shape)}, the model d_model={model.d_model}"
        )
    if not 0 <= amap.layer <= model.n_blocks:
        raise PolylensError(f"shortcut layer {amap.layer} is not in 0..{model.n_blocks}")
    capture = _CaptureLast()
    replace = _ReplaceLast(capture, amap, beta)
    src, dst = layer_site(amap.layer), layer_site(model.n_blocks)
    if src == dst:
        return {dst: [capture, replace]}
    return {src: capture, dst: replace}


# -- candidate scores under the shortcut, without re-running the model -------------------------
def first_token_ids(model: LoadedModel, continuations: Sequence[Sequence[str]]) -> list[Tensor]:
    """Per prompt, the first token id of each continuation (as the candidate scorer tokenizes)."""
    out = []
    for conts in continuations:
        ids = model.tokenizer(list(conts), add_special_tokens=False)["input_ids"]
        if any(not t for t in ids):
            raise PolylensError("a candidate continuation has no tokens; drop it")
        out.append(torch.tensor([t[0] for t in ids], dtype=torch.long))
    return out


def _first_logprobs(
    model: LoadedModel,
    states: Float[Tensor, "prompt d_model"],
    first_ids: Sequence[Tensor],
    amap: AffineMap | None,
    beta: float,
    rows: int,
) -> list[Tensor]:
    """Per prompt, its candidates' first-token log-probs decoded from ``states``.

    The states are mapped by ``amap`` first when given; ``rows`` prompts per unembedding.
    """
    out = []
    with torch.inference_mode():
        for start in range(0, states.shape[0], rows):
            h = states[start : start + rows].to(model.device, torch.float32)
            if amap is not None:
                h = amap(h, beta=beta)
            logp = torch.log_softmax(decode_logits(model, h), dim=-1).cpu()
            out += [logp[i, first_ids[start + i]] for i in range(logp.shape[0])]
    return out


def candidate_tails(
    model: LoadedModel,
    final_states: Float[Tensor, "prompt d_model"],
    first_ids: Sequence[Tensor],
    scores: Sequence[Float[Tensor, " candidate"]],
    *,
    rows: int = 64,
) -> list[Float[Tensor, " candidate"]]:
    """Per candidate, its score minus its first token's log-prob: the part the shortcut keeps.

    ``scores`` are the unmodified model's (``interp.analysis.factual.candidate_logprobs``) and
    ``final_states`` its layer-``L`` residuals at the prompts' last tokens. The shortcut edits
    only the prompt's last position after the last block, so tokens 2.. of every candidate are
    scored exactly as without it.
    """
    firsts = _first_logprobs(model, final_states, first_ids, None, 1.0, rows)
    return [s - f for s, f in zip(scores, firsts)]


def shortcut_candidate_logprobs(
    model: LoadedModel,
    states: Float[Tensor, "prompt d_model"],
    amap: AffineMap,
    first_ids: Sequence[Tensor],
    tails: Sequence[Float[Tensor, " candidate"]],
    *,
    beta: float = 1.0,
    rows: int = 64,
) -> list[Float[Tensor, " candidate"]]:
    """Candidate scores under the shortcut, from cached layer-``l`` states.

    Each is the mapped state's first-token log-prob plus the unchanged tail (``candidate_tails``).

    Equal to ``candidate_logprobs`` run under ``intervene(model, shortcut_edits(...))`` (the
    tests check it) at the cost of one unembedding per prompt instead of a forward per layer.
    """
    firsts = _first_logprobs(model, states, first_ids, amap, beta, rows)
    return [f + t for f, t in zip(firsts, tails)]


def gold_first(scores: Float[Tensor, " candidate"], gold: int) -> bool:
    """Whether the gold candidate strictly outscores every other (``rank_candidates``' rule)."""
    others = torch.cat([scores[:gold], scores[gold + 1 :]])
    return bool((others < scores[gold]).all())


@dataclass
class ShortcutResult:
    """Per estimator, layer and beta: whether each held-out fact's gold ranks first."""

    correct: dict[tuple[str, int, float], list[bool]]
    maps: dict[tuple[str, int], AffineMap]


def sweep_shortcuts(
    model: LoadedModel,
    train: Float[Tensor, "prompt layer d_model"],
    test: Float[Tensor, "prompt layer d_model"],
    layers: Sequence[int],
    *,
    first_ids: Sequence[Tensor],
    tails: Sequence[Tensor],
    gold: Sequence[int],
    betas: Sequence[float],
    ridge: float,
    jacobian_maps: Sequence[AffineMap] = (),
) -> ShortcutResult:
    """Fit a least-squares map per layer on ``train`` and score ``test`` under each map and beta.

    ``train``/``test`` hold the residuals at every layer of ``layers`` (last column: layer L) at
    the prompts' last tokens; ``first_ids``, ``tails`` and ``gold`` describe each test fact's
    candidates (``candidate_tails``). ``jacobian_maps`` (from ``mean_jacobian``) are scored too.
    """
    model.require_next_token("the linear shortcut")
    maps: dict[tuple[str, int], AffineMap] = {}
    for li, layer in enumerate(layers):
        maps[("least_squares", layer)] = fit_least_squares(
            train[:, li], train[:, -1], layer=layer, ridge=ridge
        )
    for amap in jacobian_maps:
        maps[("jacobian", amap.layer)] = amap
    correct: dict[tuple[str, int, float], list[bool]] = {}
    for (method, layer), amap in maps.items():
        states = test[:, list(layers).index(layer)]
        for beta in betas:
            scores = shortcut_candidate_logprobs(model, states, amap, first_ids, tails, beta=beta)
            correct[(method, layer, beta)] = [gold_first(s, g) for s, g in zip(scores, gold)]
    return ShortcutResult(correct, maps)
