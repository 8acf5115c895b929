"""services/notifier/channels/guard.py: no webhook or chat message to our own network."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from services.notifier.channels.guard import check_destination
from services.notifier.errors import PermanentDeliveryError, TransientDeliveryError

PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "http://[::1]:8080/hook",
    "http://10.1.2.3/hook",
    "https://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fc00::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",  # shared address space (carrier-grade NAT)
    "http://224.0.0.1/hook",
    "http://[fec0::1]/hook",  # IPv6 site-local
    "http://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
]


def forbid_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a literal address needs no DNS")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)


def fake_dns(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    async def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)


@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_private_literal_addresses_are_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_dns(monkeypatch)
    with pytest.raises(PermanentDeliveryError) as caught:
        await check_destination(url, allow_private=False)
    assert caught.value.reason == "forbidden_address"


@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_private_addresses_pass_when_allowed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_dns(monkeypatch)
    await check_destination(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook?token=x",
        "http://[2606:2800:220:1::1]:8443/",
        "http://[::ffff:93.184.216.34]/",
    ],
)
async def test_a_public_literal_address_passes_without_dns(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_dns(monkeypatch)
    await check_destination(url, allow_private=False)


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await check_destination("http://localhost:8080/hook", allow_private=False)
    assert caught.value.reason == "forbidden_address"
    await check_destination("http://localhost:8080/hook", allow_private=True)


async def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, "93.184.216.34", "10.0.0.7")
    with pytest.raises(PermanentDeliveryError) as caught:
        await check_destination("https://hooks.example.com/x", allow_private=False)
    assert caught.value.reason == "forbidden_address"
    assert "10.0.0.7" in caught.value.detail


async def test_a_name_with_only_public_addresses_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, "93.184.216.34")
    await check_destination("https://hooks.example.com/x", allow_private=False)


async def test_a_failed_lookup_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fail)
    with pytest.raises(TransientDeliveryError) as caught:
        await check_destination("https://hooks.example.com/x", allow_private=False)
    assert caught.value.reason == "dns_error"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/x", "unsupported_scheme"),
        ("file:///etc/passwd", "unsupported_scheme"),
        ("gopher://127.0.0.1:6379/_INFO", "unsupported_scheme"),
        ("http:///no-host", "invalid_url"),
        ("http://93.184.216.34:99999/", "invalid_url"),
    ],
)
async def test_other_schemes_and_malformed_urls_are_refused(url: str, reason: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(PermanentDeliveryError) as caught:
            await check_destination(url, allow_private=allow_private)
        assert caught.value.reason == reason
