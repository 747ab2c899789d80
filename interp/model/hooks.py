"""Reading hooks for extraction: record named sites, and stop the forward pass after the last.

Hooks are global state on the model: ``reading_hooks`` removes every handle in ``finally``
(through ``interp.model.sites.hooked``), so an exception inside a batch never leaves one behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from jaxtyping import Float
from torch import Tensor

from interp.model.models import LoadedModel
from interp.model.sites import Site, SiteFn, forward_order, hooked

Select = Callable[[Float[Tensor, "batch seq width"]], Float[Tensor, "rows width"]]


class StopForward(Exception):
    """Raised by the deepest hook so the forward pass ends after the last site it needs."""


@contextmanager
def reading_hooks(
    model: LoadedModel,
    sites: Sequence[Site],
    select: Select,
    *,
    stop_after_deepest: bool = True,
) -> Iterator[dict[Site, Tensor]]:
    """Record ``select(tensor)`` at each site while the context is open.

    Yields a dict filled during the forward pass: site -> ``[rows, width]``. With
    ``stop_after_deepest`` the hook of the site the forward pass reaches last raises
    ``StopForward`` once it has recorded, which the caller catches: nothing after it runs (no
    final norm, no unembedding).
    """
    captured: dict[Site, Tensor] = {}
    deepest = max(sites, key=forward_order)

    def record(site: Site) -> SiteFn:
        def fn(x: Tensor) -> None:
            captured[site] = select(x)
            if stop_after_deepest and site == deepest:
                raise StopForward

        return fn

    with hooked(model, [(site, record(site)) for site in sites]):
        yield captured
