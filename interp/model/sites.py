"""Named sites: every place in a forward pass that polylens reads or edits, one scheme everywhere.

=================  ==========================================================================
``embed``          the token embedding's output ``[batch, seq, d_model]``
``resid_pre.{i}``  the input of block ``i``: residual layer ``i`` (``resid_pre.0`` is what the
                   embeddings hand to block 0)
``resid_post.{i}`` the output of block ``i``: residual layer ``i + 1``
``attn_out.{i}``   what block ``i`` adds to the residual stream after attention (after Gemma's
                   post-attention norm; before the norm of a post-LN encoder's ``LN(x + f(x))``)
``mlp_out.{i}``    what block ``i`` adds after its MLP (after Gemma's post-feed-forward norm;
                   before an encoder's norm, so there ``resid_post`` is not the sum)
``mlp_act.{i}``    the MLP's hidden activation, the input of its down projection
                   ``[batch, seq, d_mlp]``: one value per neuron (refused for a mixture of
                   experts, which has no one layer of neurons: read ``mlp_out.{i}`` there)
=================  ==========================================================================

A ``*`` in place of the block index means every block (``mlp_out.*``). Where each site lives in
a given family is a row of ``interp.model.architectures``; nothing here branches on the
architecture.
Reading and editing share :func:`site_hook`, so a site means the same tensor to both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from interp.errors import PolylensError
from interp.model.architectures import get_submodule
from interp.model.models import LoadedModel
from interp.storage.activations import residual_site_name

KINDS = ("embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act")
_PRE = ("resid_pre", "mlp_act")
"""Sites that are a module's input (read and replaced in a forward pre-hook)."""

SiteFn = Callable[[Float[Tensor, "batch seq width"]], Tensor | None]
"""Called with a site's tensor; a returned tensor replaces it, ``None`` leaves it."""


@dataclass(frozen=True)
class Site:
    """One named site: a kind and, except for ``embed``, a block index."""

    kind: str
    block: int | None = None

    @property
    def name(self) -> str:
        """The site's name, e.g. ``mlp_out.3``."""
        return self.kind if self.block is None else f"{self.kind}.{self.block}"

    def __str__(self) -> str:
        return self.name

    @property
    def layer(self) -> int | None:
        """The residual layer a ``resid_pre``/``resid_post`` site is (None for the others)."""
        if self.kind == "resid_pre":
            return self.block
        if self.kind == "resid_post":
            return self.block + 1
        return None


def layer_site(layer: int) -> Site:
    """The site of residual layer ``layer`` (0 = the embeddings handed to block 0)."""
    kind, _, block = residual_site_name(layer).partition(".")
    return Site(kind, int(block))


_ORDER = {"embed": 0, "resid_pre": 1, "attn_out": 2, "mlp_act": 3, "mlp_out": 4, "resid_post": 5}


def forward_order(site: Site) -> tuple[int, int]:
    """Sorts sites in the order a forward pass reaches them."""
    return (-1 if site.block is None else site.block, _ORDER[site.kind])


def parse_sites(model: LoadedModel, spec: str | Site | Iterable[str | Site]) -> list[Site]:
    """Sites named by ``spec`` (names, ``*`` wildcards or ``Site``), in order, without repeats."""
    specs = [spec] if isinstance(spec, (str, Site)) else list(spec)
    out: list[Site] = []
    for item in specs:
        for site in [item] if isinstance(item, Site) else _expand(item, model.n_blocks):
            if site not in out:
                out.append(site)
    if not out:
        raise PolylensError("no sites given; name at least one, e.g. 'resid_pre.3' or 'mlp_out.*'")
    return out


def _expand(name: str, n_blocks: int) -> list[Site]:
    kind, _, index = name.partition(".")
    if kind not in KINDS:
        raise PolylensError(f"unknown site {name!r}; sites are {', '.join(KINDS)} (e.g. mlp_out.3)")
    if kind == "embed":
        if index:
            raise PolylensError(f"site {name!r}: 'embed' takes no block index")
        return [Site("embed")]
    if index == "*":
        return [Site(kind, i) for i in range(n_blocks)]
    if not index.isdigit() or int(index) >= n_blocks:
        raise PolylensError(
            f"site {name!r} needs a block index in 0..{n_blocks - 1} or '*' "
            f"(the model has {n_blocks} blocks)"
        )
    return [Site(kind, int(index))]


def site_module(model: LoadedModel, site: Site) -> nn.Module:
    """The module whose input (``resid_pre``, ``mlp_act``) or output is the site's tensor."""
    if site.kind == "embed":
        return get_submodule(model.hf, model.adapter.embed)
    if site.kind == "mlp_act" and model.adapter.mlp_down is None:
        raise PolylensError(
            f"site {site}: {model.hf.config.model_type} {model.adapter.mlp_act_refusal}; "
            f"read mlp_out.{site.block} (what the MLP adds: its experts' weighted sum) instead"
        )
    block = model.blocks[site.block]
    path = {
        "resid_pre": None,
        "resid_post": None,
        "attn_out": model.adapter.attn_out,
        "mlp_out": model.adapter.mlp_out,
        "mlp_act": model.adapter.mlp_down,
    }[site.kind]
    return block if path is None else get_submodule(block, path)


def site_width(model: LoadedModel, site: Site) -> int:
    """Size of the site's last dimension: ``d_model``, or the MLP width for ``mlp_act``."""
    if site.kind != "mlp_act":
        return model.d_model
    down = site_module(model, site)
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
    return down.in_features if isinstance(down, nn.Linear) else down.weight.shape[0]


def site_hook(model: LoadedModel, site: Site, fn: SiteFn) -> RemovableHandle:
    """Call ``fn`` on the site's tensor during every forward pass; it may return a replacement.

    Returns the hook's handle; prefer the context managers (``recording``, ``intervene``), which
    remove their hooks in ``finally``: hooks are global state on the model.
    """
    module = site_module(model, site)
    if site.kind in _PRE:

        def pre_hook(_module: nn.Module, args: tuple, kwargs: dict):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(_module: nn.Module, _args: tuple, output: Tensor | tuple):
        # Attention modules return (output, weights); decoder layers a tensor or a tuple.
        new = fn(output[0] if isinstance(output, tuple) else output)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return module.register_forward_hook(post_hook)


@contextmanager
def hooked(model: LoadedModel, fns: Iterable[tuple[Site, SiteFn]]) -> Iterator[None]:
    """Hold ``site_hook``s while the context is open; remove every one, even on an exception."""
    handles: list[RemovableHandle] = []
    try:
        for site, fn in fns:
            handles.append(site_hook(model, site, fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def recording(
    model: LoadedModel, sites: str | Iterable[str | Site]
) -> Iterator[dict[str, list[Tensor]]]:
    """Record every listed site's tensor, per forward pass, while the context is open.

    Yields ``{site name: [tensor of each forward pass]}`` (detached, on the model's device).
    """
    parsed = parse_sites(model, sites)
    records: dict[str, list[Tensor]] = {s.name: [] for s in parsed}

    def keep(name: str) -> SiteFn:
        return lambda x: records[name].append(x.detach())

    with hooked(model, [(s, keep(s.name)) for s in parsed]):
        yield records
