"""Let aioice offer a 127.0.0.1 host candidate.

aioice leaves loopback out of its host candidates. A browser on the same machine, or a
test in a network namespace with only ``lo``, can then never connect. Adding loopback is
harmless elsewhere: peers simply do not pick it when they cannot reach it.
"""

from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original(use_ipv4, use_ipv6)
    if use_ipv4 and "127.0.0.1" not in addresses:
        addresses.append("127.0.0.1")
    return addresses


def enable() -> None:
    """Install the wrapper once (idempotent)."""
    if aioice.ice.get_host_addresses is not _with_loopback:
        aioice.ice.get_host_addresses = _with_loopback
