"""Where the Kubernetes rollout store's reads come from: a watch when it can answer, else the API.

:class:`RolloutReads` serves :class:`~controller.k8s.store.KubernetesRolloutStore`'s reads from
a :class:`~controller.k8s.rollout_cache.RolloutCache` while the cache is fit, and from a GET or
a LIST otherwise (no cache; not synced yet; the watch down or lagging: see
:mod:`controller.k8s.rollout_cache`). Every answer the store gets from the API itself (a
direct read, a write's answer, its own delete) is handed to the cache, so that the store
reads its own writes before the watch delivers them.

Source: Kubernetes API concepts ("Efficient detection of changes").
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from controller.k8s.rollout_api import RolloutApi
from controller.k8s.rollout_cache import CacheUnfit, RolloutCache
from controller.store.rollouts import RolloutNotFoundError


class RolloutReads:
    """The store's reads of ``Rollout`` objects.

    Args:
        api: the API calls (GET, LIST).
        cache: the watch-backed cache, started (None: every read is a GET or a LIST);
            :meth:`close` stops it.
    """

    def __init__(self, api: RolloutApi, cache: RolloutCache | None) -> None:
        self._api = api
        self._cache = cache

    def object(self, name: str) -> Mapping[str, Any]:
        """``name``'s object (do not mutate it): from the cache when it can answer, else a
        GET. Raises RolloutNotFoundError, StoreError."""
        if self._cache is not None:
            with contextlib.suppress(CacheUnfit):
                found = self._cache.object(name)
                if found is None:
                    raise RolloutNotFoundError(name)
                return found
        return self.read(name)

    def objects(self) -> list[Mapping[str, Any]]:
        """Every object (do not mutate them): from the cache when it can answer, else a
        LIST (which the cache then takes as the newest word). Raises StoreError."""
        if self._cache is not None:
            with contextlib.suppress(CacheUnfit):
                return self._cache.objects()
        started = self.started()
        objects = self._api.list()
        if self._cache is not None:
            self._cache.settle(objects, started)
        return list(objects)

    def read(self, name: str) -> dict[str, Any]:
        """GET ``name``, never from the cache (the caller may mutate the answer); the cache
        learns it. Raises RolloutNotFoundError, StoreError."""
        started = self.started()
        try:
            obj = self._api.get(name)
        except RolloutNotFoundError:
            if self._cache is not None:
                self._cache.forget(name, started)
            raise
        return self.noted(obj, started)

    def started(self) -> float:
        """The time to pass as ``started`` for a request about to start (the cache's clock;
        0.0 without a cache)."""
        return self._cache.clock() if self._cache is not None else 0.0

    def noted(self, obj: dict[str, Any], started: float) -> dict[str, Any]:
        """Hand the cache ``obj``, the answer of a request (a write) started at ``started``;
        returns ``obj``."""
        if self._cache is not None:
            self._cache.note(obj, started)
        return obj

    def deleted(self, name: str, uid: str, started: float) -> None:
        """The store deleted ``name`` (its object of ``uid``) with a request started at
        ``started``."""
        if self._cache is not None:
            self._cache.forget(name, started, uid)

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the cache's first list; False at once without
        a cache."""
        return self._cache is not None and self._cache.wait_synced(timeout)

    @property
    def from_watch(self) -> bool:
        """Whether reads are answered from the cache now."""
        return self._cache is not None and self._cache.fit()

    def close(self) -> None:
        """Stop the cache's watch (its thread joined); reads are GETs and LISTs afterwards."""
        if self._cache is not None:
            self._cache.stop()
