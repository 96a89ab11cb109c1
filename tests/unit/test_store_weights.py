"""The SQLite weight store keeps weights across reopening."""

from __future__ import annotations

from pathlib import Path

from controller.store.weights import SqliteWeightStore


def test_weights_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    store = SqliteWeightStore(path)
    assert store.load() == {}
    store.save("comments", {"py": 90, "go": 10})
    store.save("orders", {"a": 1, "b": 0})
    store.save("comments", {"py": 75, "go": 25})
    store.close()
    again = SqliteWeightStore(path)
    assert again.load() == {"comments": {"go": 25, "py": 75}, "orders": {"a": 1, "b": 0}}
    again.close()
