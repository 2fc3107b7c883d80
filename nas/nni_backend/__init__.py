"""Optional NNI back-end of `nas search` (`--strategy nni-darts | nni-gumbel | nni-random`).

Nothing here imports nni until a search asks for it: :func:`require_nni` does, and turns a missing install into
one :class:`~nas.errors.UserError` line naming the extra. The space is :mod:`nas.nni_backend.space`, the search
:mod:`nas.nni_backend.search`, the conversion back to our architecture JSON :mod:`nas.nni_backend.convert`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from nas.errors import UserError

if TYPE_CHECKING:
    from nas.config import ExperimentConfig
    from nas.searcher.common import SearchResult

__all__ = ["STRATEGIES", "NNI_VERSION", "NniMissing", "require_nni", "run_nni_search"]

# `search.strategy` value → the NNI one-shot strategy class (nni.nas.strategy)
STRATEGIES = {"nni-darts": "DARTS", "nni-gumbel": "GumbelDARTS", "nni-random": "RandomOneShot"}
NNI_VERSION = "3.0"  # the version the `nni` extra pins and this adapter is tested with
INSTALL_HINT = "pip install 'nas-seg[nni]' (or: bash bootstrap.sh nni)"


class NniMissing(UserError):
    """NNI (or the pytorch-lightning its one-shot strategies import) is not installed."""


def require_nni() -> Any:
    """Import and return ``nni.nas.strategy``, or raise :class:`NniMissing` naming the extra to install.

    NNI's warnings about untested torch versions are silenced: the adapter is tested on this torch.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"nni(\.|$)")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            nni = importlib.import_module("nni")
            strategy = importlib.import_module("nni.nas.strategy")
            importlib.import_module("nni.nas.nn.pytorch")
            importlib.import_module("nni.nas.oneshot.pytorch.strategy")
    except ImportError as exc:
        raise NniMissing(f"--strategy nni-* needs NNI {NNI_VERSION} ({exc.name or 'nni'} is missing): "
                         f"{INSTALL_HINT}") from None
    if getattr(nni, "__version__", "") != NNI_VERSION:
        warnings.warn(f"NNI {nni.__version__} is installed; this adapter is tested with {NNI_VERSION}", stacklevel=2)
    return strategy


def run_nni_search(cfg: ExperimentConfig, resume: bool = False) -> SearchResult:
    """Run the search with the NNI one-shot strategy `cfg.search.strategy` (see :mod:`nas.nni_backend.search`)."""
    if cfg.search.strategy not in STRATEGIES:
        raise UserError(f"search.strategy {cfg.search.strategy!r} is not an NNI strategy "
                        f"(known: {', '.join(STRATEGIES)})")
    require_nni()
    from nas.nni_backend.search import run_search_nni

    return run_search_nni(cfg, resume=resume)
