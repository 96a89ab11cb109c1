"""What the Rollout cache tests share: a hand-driven clock, a wait, and Rollout objects made
through the fake API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fakekube import FakeKube
from kubernetes import client as k8s_client
from store_contract import policy

from controller.k8s.crd import GROUP, PLURAL, VERSION

NS = "sluice"
COLLECTION = rf"/namespaces/{NS}/rollouts$"


class Clock:
    """Monotonic seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {cond}"
        time.sleep(0.02)


def api(kube: FakeKube) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(kube.api_client())


def create(kube: FakeKube, name: str) -> dict[str, Any]:
    """A Rollout ``name`` with the store contract's policy, as the API server returns it."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": policy(name).model_dump(mode="json", by_alias=True, exclude_none=True)["spec"],
    }
    made = api(kube).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert isinstance(made, dict)
    return made
