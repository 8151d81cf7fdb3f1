"""Which addresses the relay may connect to for a host a client chose: public ones only."""

from __future__ import annotations

import ipaddress

from ...providers.routing import IPAddress


class ForbiddenAddress(OSError):
    """A client-chosen host name resolved to a loopback, private, link-local or other non-public
    address. An OSError, so it fails the call like any connection failure would."""


def public(address: IPAddress) -> bool:
    """Whether an address is one the open internet routes to, looking through the IPv6 forms that
    carry an IPv4 address (mapped, 6to4, Teredo, NAT64) at the address they stand for."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not public(embedded):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
