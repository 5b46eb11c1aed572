"""Compiled denoisers cached across processes, so that a worker's second start is warm."""

from __future__ import annotations

import os

from tasks.contenthash import cache_dir

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def use_compile_cache() -> str:
    """Point torch inductor's caches (FX graphs, AOT autograd, kernels) into t2v's cache
    folder, unless TORCHINDUCTOR_CACHE_DIR names another; returns the folder. Inductor's
    default is under /tmp, which a reboot or a fresh container empties."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # Importing diffusers already set the variable to inductor's default: only another
    # value is the user's choice.
    chosen = os.environ.get(INDUCTOR_CACHE_ENV)
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ[INDUCTOR_CACHE_ENV] = str(cache_dir() / "inductor")
    return os.environ[INDUCTOR_CACHE_ENV]
