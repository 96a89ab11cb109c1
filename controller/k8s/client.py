"""Connecting to a Kubernetes API server: which configuration, which namespace.

Precedence (as kubectl): an explicit kubeconfig file or context; else the pod's service account
when running in a cluster (``KUBERNETES_SERVICE_HOST`` set); else ``$KUBECONFIG`` or
``~/.kube/config``. Source: the ``kubernetes`` Python client's ``config`` package
(``load_kube_config``, ``InClusterConfigLoader``) and kubectl's kubeconfig rules.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where a pod finds its token, CA certificate and namespace."""

DEFAULT_NAMESPACE = "default"


class ClusterError(Exception):
    """No usable Kubernetes configuration; the message says what was tried, for people."""


def api_client(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> k8s_client.ApiClient:
    """An API client (synchronous, urllib3) for the chosen cluster.

    Args:
        kubeconfig: a kubeconfig file (``--kubeconfig``); None: see the module's precedence.
        context: a context of the kubeconfig (``--context``); None: its current context.
        service_account_dir: the in-cluster token and CA directory (tests point it elsewhere).

    Raises:
        ClusterError: the kubeconfig is missing, unreadable or lacks the context; or the
            in-cluster service account cannot be read; or no configuration exists at all.
    """
    if kubeconfig is None and context is None and _in_cluster():
        configuration = k8s_client.Configuration()
        try:
            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(service_account_dir / "token"),
                cert_filename=str(service_account_dir / "ca.crt"),
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise ClusterError(f"in-cluster Kubernetes configuration: {exc}") from exc
        return k8s_client.ApiClient(configuration)
    path = _kubeconfig_path(kubeconfig)
    try:
        made: k8s_client.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context, persist_config=False
        )
        return made
    except ConfigException as exc:
        raise ClusterError(f"kubeconfig {path}: {exc}") from exc
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:  # not a kubeconfig
        raise ClusterError(f"kubeconfig {path} cannot be read: {exc}") from exc


def namespace_default(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> str:
    """The namespace to work in when none is given (``-n``).

    The kubeconfig context's ``namespace`` when a kubeconfig or context is given; else the
    pod's namespace file in a cluster; else the current context's namespace of the default
    kubeconfig; else ``default``.

    Raises:
        ClusterError: an explicit kubeconfig cannot be read, or lacks the context.
    """
    explicit = kubeconfig is not None or context is not None
    if not explicit:
        ns_file = service_account_dir / "namespace"
        if _in_cluster() and ns_file.is_file():
            return ns_file.read_text().strip() or DEFAULT_NAMESPACE
        if not _default_kubeconfig().is_file():
            return DEFAULT_NAMESPACE
    path = _kubeconfig_path(kubeconfig)
    try:
        contexts, current = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(path)
        )
    except ConfigException as exc:
        raise ClusterError(f"kubeconfig {path}: {exc}") from exc
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ClusterError(f"kubeconfig {path} cannot be read: {exc}") from exc
    if context is None:
        chosen = current
    else:
        chosen = next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise ClusterError(f"kubeconfig {path}: no context named {context!r}")
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else DEFAULT_NAMESPACE


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _default_kubeconfig() -> Path:
    """``$KUBECONFIG`` (its first file, when a list) or ``~/.kube/config``."""
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(listed[0] if listed else "~/.kube/config").expanduser()


def _kubeconfig_path(kubeconfig: Path | None) -> Path:
    path = kubeconfig if kubeconfig is not None else _default_kubeconfig()
    if not path.is_file():
        if kubeconfig is not None:
            raise ClusterError(f"kubeconfig {path} does not exist")
        raise ClusterError(
            f"no Kubernetes configuration: not running in a cluster (KUBERNETES_SERVICE_HOST "
            f"unset) and no kubeconfig at {path}; pass --kubeconfig or set KUBECONFIG"
        )
    return path
