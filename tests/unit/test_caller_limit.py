"""Who a caller is, for the per-caller query limit: X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from app.api.caller_limit import caller_key, client_address


def scope(peer: str, forwarded: str | None = None, token: str | None = None) -> dict:
    headers = []
    if forwarded is not None:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {"client": (peer, 5000), "headers": headers}


def test_forwarded_addresses_count_only_from_a_trusted_proxy() -> None:
    trusted = frozenset({"10.0.0.1", "10.0.0.2"})
    assert client_address(scope("198.51.100.9", "1.2.3.4"), trusted) == "198.51.100.9"
    assert client_address(scope("10.0.0.1", "1.2.3.4"), trusted) == "1.2.3.4"
    # a client's own X-Forwarded-For entries come first; the proxies append the real peer
    assert client_address(scope("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2"), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.1"), trusted) == "10.0.0.1"


def test_a_caller_is_its_token_when_reads_need_one() -> None:
    a, b = scope("1.1.1.1", token="alpha"), scope("1.1.1.1", token="beta")
    assert caller_key(a, True, frozenset()) != caller_key(b, True, frozenset())
    assert "alpha" not in caller_key(a, True, frozenset())
    assert caller_key(a, False, frozenset()) == caller_key(b, False, frozenset()) == "ip:1.1.1.1"
