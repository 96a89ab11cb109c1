"""The watch side of the store: the changes it keeps, the open watches, and what each watch
sees of a change (its kind, namespace and selectors; an object entering or leaving a selector
is ADDED / DELETED for that watch, as the real server's watch cache does)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .resources import ResourceType
from .selectors import Predicate

Obj = dict[str, Any]


@dataclass
class Change:
    rv: int
    resource: ResourceType
    type: str
    obj: Obj
    old: Obj | None


@dataclass
class Watcher:
    """One open watch: its filter, the last resourceVersion delivered, and the close
    generation it started in (``close_watches`` moves the store's)."""

    resource: ResourceType
    namespace: str | None
    predicate: Predicate
    last: int
    gen: int
    initial: list[tuple[str, Obj]] = field(default_factory=list)


def visible(w: Watcher, change: Change) -> tuple[str, Obj] | None:
    """What watch ``w`` sees of ``change``: nothing, or (type, object)."""
    if change.resource != w.resource:
        return None
    ns = change.obj["metadata"].get("namespace", "")
    if w.namespace is not None and ns != w.namespace:
        return None
    new = w.predicate(change.obj)
    old = change.old is not None and w.predicate(change.old)
    if change.type == "MODIFIED" and new != old:
        # An object entering or leaving the selection is ADDED / DELETED for this watch.
        return ("ADDED" if new else "DELETED"), copy.deepcopy(change.obj)
    if (change.type == "DELETED" and old) or (change.type != "DELETED" and new):
        return change.type, copy.deepcopy(change.obj)
    return None
