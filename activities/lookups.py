"""Connecting to a member by name, its lookup on threads of the probes' own.

asyncio looks a name up in the loop's default thread pool, where the worker's other
blocking calls (held links, logins, event writes) wait too. A lookup that takes seconds (a
slow resolver, a spec of names that never resolve) held those threads: one spec's bad
names delayed every cluster's work. Here lookups queue among themselves only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

LOOKUPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lookups")


async def open_connection(
    host: str, port: int, **options: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection to `host`, each address it has in turn; the last refusal
    is raised. `options` are open_connection's (ssl, server_hostname)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal needs no lookup: asyncio takes it as it is
        return await asyncio.open_connection(host, port, **options)
    lookup = partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    found = await asyncio.get_running_loop().run_in_executor(LOOKUPS, lookup)
    refused: OSError | None = None
    for family, _, _, _, sockaddr in found:
        try:
            return await asyncio.open_connection(str(sockaddr[0]), port, family=family, **options)
        except OSError as error:
            refused = error
    assert refused is not None  # getaddrinfo returns at least one address or raises
    raise refused
