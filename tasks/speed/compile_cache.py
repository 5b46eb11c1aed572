"""Compiled denoisers cached across processes, so that a worker's second start is warm."""

from __future__ import annotations

import os

from tasks.contenthash import cache_dir

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def use_compile_cache() -> str:
    """Point torch inductor's caches (FX graphs, AOT autograd, kernels) into t2v's cache
    folder, unless TORCHINDUCTOR_CACHE_DIR already names one; returns the folder. Inductor
    otherwise keeps them under /tmp, which a reboot or a fresh container empties."""
    return os.environ.setdefault(INDUCTOR_CACHE_ENV, str(cache_dir() / "inductor"))
