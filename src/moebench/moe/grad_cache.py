"""Reuse of expert weight-gradient buffers across steps (CPU).

Expert weight gradients are large ([E, H, D]; 38 MB for 16 ViT-S experts, 464 MB for 197).
With ``zero_grad(set_to_none=True)`` each backward allocates them afresh; glibc serves
anything above 32 MB with a new ``mmap``, so every step pays the kernel's page faults on
first write (measured here: ~10 ms per 38 MB, ~75-110 ms per 464 MB, against ~1 ms to
overwrite memory that is already mapped). The CUDA caching allocator avoids this on GPUs;
on CPU nothing does.

:class:`GradBufferCache` keeps the storage of the last buffer it handed out per key and
hands it out again only when nothing else references it any more (its storage use count
is 1: ours). While a gradient is alive in ``param.grad``, kept by the user, or being
accumulated into, a fresh buffer is allocated exactly as before, so results never change;
only the page faults go. The cost: one gradient's worth of memory stays mapped between
steps, also while the next forward runs (call :meth:`clear` to release it, or set
``enabled = False`` to trade the page faults back for that memory).
"""
from __future__ import annotations

from typing import Hashable, Optional

import torch
from torch import Tensor


def _use_count(storage: torch.UntypedStorage) -> int:
    return torch._C._storage_Use_Count(storage._cdata)


class GradBufferCache:
    """At most one cached storage per key; see the module docstring."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._storages: dict[Hashable, tuple[torch.UntypedStorage, torch.dtype]] = {}

    def empty_like(self, key: Hashable, like: Tensor) -> Tensor:
        """An uninitialised contiguous tensor shaped like ``like``, on the cached storage
        when that storage is free and fits, else newly allocated (and then cached)."""
        if not self.enabled:
            self._storages.clear()
            return torch.empty(like.shape, dtype=like.dtype, device=like.device)
        entry = self._storages.get(key)
        nbytes = like.numel() * like.element_size()
        if entry is not None:
            storage, dtype = entry
            if (dtype == like.dtype and storage.device == like.device
                    and storage.nbytes() == nbytes and _use_count(storage) == 1):
                return like.new_empty(0).set_(storage, 0, like.shape)
        buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        self._storages[key] = (buf.untyped_storage(), like.dtype)
        return buf

    def nbytes(self) -> int:
        """Bytes held by the cache."""
        return sum(s.nbytes() for s, _ in self._storages.values())

    def clear(self) -> None:
        """Release every cached storage (buffers in use stay valid)."""
        self._storages.clear()

    # a copied or pickled module starts with an empty cache (storages are not state)
    def __deepcopy__(self, memo: dict) -> "GradBufferCache":
        return GradBufferCache(self.enabled)

    def __getstate__(self) -> dict:
        return {"enabled": self.enabled, "_storages": {}}


def grad_buffer(cache: Optional[GradBufferCache], key: Hashable, like: Tensor) -> Tensor:
    """``cache.empty_like(key, like)``, or ``torch.empty_like(like)`` without a cache."""
    return torch.empty_like(like) if cache is None else cache.empty_like(key, like)
