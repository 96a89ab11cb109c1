"""Embedded defaults shipped inside the package (``controller/defaults/*.yaml``)."""

from __future__ import annotations

from importlib import resources

DEFAULT_GATEWAY_NAME = "<embedded default gateway>"
"""The file name to give :func:`~controller.policy.loading.load_gateway` for the default."""


def default_gateway_text() -> str:
    """The YAML text of the default gateway used by ``sluice serve`` without ``--gateway``.

    One listener ``http`` on 127.0.0.1:10000; ``/api/comments`` split between
    ``comments-python`` (100) and ``comments-go`` (0); everything else to ``monolith``.

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    return resources.files("controller").joinpath("defaults/gateway.yaml").read_text("utf-8")
