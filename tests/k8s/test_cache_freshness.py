"""Which copy of a Rollout a watch-backed cache serves (controller.k8s.cache_freshness): pure."""

from __future__ import annotations

from typing import Any

import pytest

from controller.k8s.cache_freshness import (
    caught_up,
    choose,
    deleted,
    known,
    merged,
    replaces,
    revision,
)


def obj(name: str = "c", rev: int | None = 1, uid: str = "u1") -> dict[str, Any]:
    status = {} if rev is None else {"revision": rev}
    return {"metadata": {"name": name, "uid": uid}, "status": status}


def test_revision_reads_status_and_an_object_without_status_is_revision_one() -> None:
    assert revision(obj(rev=7)) == 7
    assert revision(obj(rev=None)) == 1
    assert revision({"metadata": {}, "status": {"revision": "x"}}) == 0


@pytest.mark.parametrize(
    ("watched", "expected"),
    [
        (None, "known"),  # not delivered yet
        (obj(rev=1), "known"),  # an older revision
        (obj(rev=2), "watched"),  # the same
        (obj(rev=3), "watched"),  # newer (another writer after ours)
        (obj(rev=9, uid="u0"), "known"),  # another incarnation: not comparable
    ],
)
def test_choose_within_the_lag_bound(watched: dict[str, Any] | None, expected: str) -> None:
    entry = known(obj(rev=2), now=10.0)
    assert choose(watched, entry, now=11.0, max_lag_s=3.0) == expected


def test_a_known_copy_the_watch_does_not_confirm_in_time_sends_reads_to_the_api() -> None:
    entry = known(obj(rev=2), now=10.0)
    assert choose(obj(rev=1), entry, now=13.0, max_lag_s=3.0) == "known"
    assert choose(obj(rev=1), entry, now=13.5, max_lag_s=3.0) == "direct"
    assert choose(obj(rev=2), entry, now=99.0, max_lag_s=3.0) == "watched"
    assert choose(obj(rev=1), None, now=99.0, max_lag_s=3.0) == "watched"


def test_an_absence_is_caught_up_by_no_object_or_another_incarnation() -> None:
    gone = known(None, now=10.0, deleted_uid="u1")
    assert caught_up(gone, None)
    assert caught_up(gone, obj(uid="u2"))
    assert not caught_up(gone, obj(uid="u1"))
    unknown_uid = known(None, now=10.0)
    assert caught_up(unknown_uid, None)
    assert not caught_up(unknown_uid, obj(uid="u2"))


def test_replaces_by_revision_within_an_incarnation_else_by_request_order() -> None:
    two = known(obj(rev=2), now=10.0)
    assert replaces(None, two, started_at=0.0)
    assert replaces(two, known(obj(rev=3), now=11.0), started_at=5.0)
    assert replaces(two, known(obj(rev=2), now=11.0), started_at=5.0)
    # a slow read started before our write returns an older revision: it does not win
    assert not replaces(two, known(obj(rev=1), now=11.0), started_at=5.0)
    other = known(obj(rev=1, uid="u2"), now=12.0)
    assert not replaces(two, other, started_at=9.0)  # its request began before two was noted
    assert replaces(two, other, started_at=10.0)
    assert replaces(two, known(None, now=12.0), started_at=10.0)
    assert not replaces(two, known(None, now=12.0), started_at=9.0)


def test_deleted_ends_only_the_same_incarnation() -> None:
    entry = known(obj(rev=5), now=1.0)
    assert deleted(entry, obj(rev=4))
    assert not deleted(entry, obj(uid="u0"))
    assert not deleted(known(None, now=1.0), obj())


def test_merged_serves_each_name_from_its_freshest_copy() -> None:
    watched = {"a": obj("a", 1), "b": obj("b", 4), "d": obj("d", 1)}
    entries = {
        "a": known(obj("a", 2), now=10.0),  # our write, not delivered yet
        "b": known(obj("b", 3), now=10.0),  # delivered, and another writer's after it
        "c": known(obj("c", 1), now=10.0),  # created by us, not delivered yet
        "d": known(None, now=10.0),  # deleted (404 read), the watch behind
    }
    got = merged(watched, entries, now=11.0, max_lag_s=3.0)
    assert got is not None
    assert [(o["metadata"]["name"], revision(o)) for o in got] == [("a", 2), ("b", 4), ("c", 1)]
    assert merged(watched, entries, now=20.0, max_lag_s=3.0) is None
    assert merged(watched, {}, now=20.0, max_lag_s=3.0) == list(watched.values())
