"""``host:port`` addresses of the controller's listeners."""

from __future__ import annotations


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:18000"`` → ``("127.0.0.1", 18000)``; ``"[::1]:80"`` → ``("::1", 80)``.

    Raises:
        ValueError: no port, or a port outside 0-65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r} must be host:port")
    return host.strip("[]"), int(port)
