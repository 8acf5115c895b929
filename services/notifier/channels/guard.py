"""Refuse destinations inside our own network (server-side request forgery) before a webhook or
chat message is sent. Each sender calls :func:`check_destination` right before it connects.

The check resolves the host on its own, so it does not pin the connection to the address it
checked: a name whose DNS answer changes between the check and the connection (DNS rebinding) is
not caught here. Where that matters, send through an egress proxy that filters private addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from services.notifier.errors import PermanentDeliveryError, TransientDeliveryError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_forbidden_address(address: IPAddress) -> bool:
    """Whether ``address`` is anywhere but the public internet: private, loopback, link-local
    (cloud metadata), multicast, reserved, unspecified, shared (100.64/10), IPv6 site-local, or
    an IPv4-mapped / 6to4 IPv6 form of any of those."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_forbidden_address(address.ipv4_mapped)
        if address.sixtofour is not None and is_forbidden_address(address.sixtofour):
            return True
        if address.is_site_local:
            return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


DNS_TIMEOUT_S = 5.0


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Raise :class:`PermanentDeliveryError` unless ``url`` is http(s) and every address its host
    resolves to is public (any address is accepted with ``allow_private``). A literal IP is
    checked as it is; a failed DNS lookup is a :class:`TransientDeliveryError` (``dns_error``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise PermanentDeliveryError("invalid_url", "the address cannot be parsed") from None
    if parts.scheme not in ("http", "https"):
        raise PermanentDeliveryError("unsupported_scheme", f"scheme {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise PermanentDeliveryError("invalid_url", "the address has no host")
    if allow_private:
        return
    for address in await _addresses(host, port or (443 if parts.scheme == "https" else 80)):
        if is_forbidden_address(address):
            raise PermanentDeliveryError(
                "forbidden_address", f"{host} is, or resolves to, non-public address {address}"
            )


async def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass  # a name, not a literal address
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
            timeout=DNS_TIMEOUT_S,
        )
    except TimeoutError:
        raise TransientDeliveryError("dns_error", f"{host}: no answer") from None
    except socket.gaierror as exc:
        raise TransientDeliveryError("dns_error", f"{host}: {exc.strerror}") from None
    except UnicodeError:
        raise PermanentDeliveryError("invalid_url", "the host is not a valid name") from None
    if not infos:
        raise TransientDeliveryError("dns_error", f"{host}: no addresses")
    return [ipaddress.ip_address(str(info[4][0])) for info in infos]
