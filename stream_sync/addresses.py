"""Client addresses as limits count them: one key per host an attacker controls."""

from __future__ import annotations

import ipaddress


def address_key(address: str) -> str:
    """IPv4 as is; IPv6 per /64 (what one host usually holds); IPv4-mapped as IPv4."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
