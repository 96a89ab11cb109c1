"""Reading what a rollout report needs (the store, the comparator's admin API) and writing it.

Source: the comparator's admin API, ``GET /v1/parity/routes/{route}``
(:mod:`controller.parity.api`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from controller.report.data import ReportData, current_only
from controller.report.page import render
from controller.store.rollouts import RolloutStore

PARITY_TIMEOUT_S = 10.0
"""How long the comparator's admin API may take to answer, in seconds."""


def collect(
    store: RolloutStore, name: str, parity_admin: str | None = None, now: float | None = None
) -> ReportData:
    """What the report of rollout ``name`` shows: its record, history, analysis log and weight
    steps (only the current rollout's, when the name was reused), and the comparator's
    mismatch samples for its route when ``parity_admin`` (``http://host:port`` or
    ``host:port``) is given.

    Raises:
        RolloutNotFoundError: no rollout has this name.
        StoreError: the store failed.
    """
    rollout = store.get(name)
    samples: list[dict[str, Any]] | None = None
    note = "No comparator admin API was given (--parity-admin): no samples available."
    if parity_admin:
        samples, note = parity_samples(parity_admin, rollout.route)
    data = ReportData(
        rollout=rollout,
        history=store.history(name),
        analyses=store.analyses(name),
        steps=store.weight_steps(name),
        parity_samples=samples,
        parity_note=note,
        generated_at=time.time() if now is None else now,
    )
    return current_only(data)


def parity_samples(admin: str, route: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The comparator's mismatch samples for ``route`` (newest last), or None and why not
    (unreachable, not under comparison, an unexpected answer): a report is still written."""
    base = admin.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    url = f"{base}/v1/parity/routes/{quote(route, safe='')}"
    try:
        response = httpx.get(url, timeout=PARITY_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return None, f"The comparator at {base} could not be reached ({exc}): no samples."
    if response.status_code == 404:
        return None, f"The comparator at {base} does not compare route {route!r}: no samples."
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200 or not isinstance(data, dict):
        return None, f"The comparator at {base} answered HTTP {response.status_code}: no samples."
    samples = data.get("samples")
    if not isinstance(samples, list):
        return None, f"The comparator at {base} gave no sample list for {route!r}."
    kept = [s for s in samples if isinstance(s, dict)]
    return kept, "" if kept else f"The comparator at {base} had no mismatch samples."


def write_report(data: ReportData, path: Path) -> Path:
    """Write the report's HTML to ``path`` (its folder created) and return it.

    Raises:
        OSError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path
