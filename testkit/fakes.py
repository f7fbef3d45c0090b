"""Fake members for hostile tests: loopback listeners, in a process of their own, that
answer what no datastore would. Each behaviour answers whatever it is asked (a
four-letter word, kazoo's session request, Kafka's ApiVersions) the same way:

- `silent`: reads, never answers;
- `garbage`: 64 kB of random bytes, then closes;
- `trickle`: one byte a second, for as long as the client stays;
- `flood`: 100 MB, then closes.

Both begin as a reply in a length-prefixed protocol (kazoo's, Kafka's) would: `trickle`
announces a frame of 1 kB, which a client that waits per byte, not for the whole reply,
waits for for ever; `flood` one just under Kafka's limit and far beyond ZooKeeper's, which
a client that believes the length holds whole.

Run as `python -m testkit.fakes HOST BEHAVIOUR=COUNT ...`: the first line on stdout is a
JSON object, each behaviour's addresses; it serves until stdin closes. A process of its
own keeps the fakes' CPU off the worker and the test, which are what a test measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from enum import StrEnum

from config.settings import REPO_ROOT


class Behaviour(StrEnum):
    SILENT = "silent"
    GARBAGE = "garbage"
    TRICKLE = "trickle"
    FLOOD = "flood"
    PROMISE = "promise"
    """Announces a reply as large as FLOOD's, then sends it a byte a second."""


FLOOD_BYTES = 100 << 20
GARBAGE_BYTES = 64 << 10
# Under Kafka's 64 MB frame limit (activities/kafka/connection.py MAX_FRAME), over
# ZooKeeper's 1 MB (jute.maxbuffer).
FLOOD_ANNOUNCED = struct.pack(">i", (64 << 20) - (1 << 20))
TRICKLE_ANNOUNCED = struct.pack(">i", 1 << 10)
TRICKLE_EVERY_S = 1.0
# Long enough for a client's request to arrive; the answer does not depend on it.
REQUEST_WAIT_S = 0.5

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REQUEST_WAIT_S):
            await reader.read(4096)


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request(reader)
    writer.write(random.randbytes(GARBAGE_BYTES))
    await writer.drain()


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _dribble(writer, TRICKLE_ANNOUNCED, reader)


async def _promise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _dribble(writer, FLOOD_ANNOUNCED, reader)


async def _dribble(
    writer: asyncio.StreamWriter, announced: bytes, reader: asyncio.StreamReader
) -> None:
    await _request(reader)
    writer.write(announced)
    while True:
        await writer.drain()
        await asyncio.sleep(TRICKLE_EVERY_S)
        writer.write(b"x")


async def _flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request(reader)
    chunk = random.randbytes(1 << 20)
    writer.write(FLOOD_ANNOUNCED)
    for _ in range(FLOOD_BYTES >> 20):
        writer.write(chunk)
        await writer.drain()


HANDLERS: dict[Behaviour, Handler] = {
    Behaviour.SILENT: _silent,
    Behaviour.GARBAGE: _garbage,
    Behaviour.TRICKLE: _trickle,
    Behaviour.FLOOD: _flood,
    Behaviour.PROMISE: _promise,
}


def _guarded(handler: Handler) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A client that hangs up mid-answer is what a probe with a cap or a deadline does.
        with contextlib.suppress(OSError):
            await handler(reader, writer)
        writer.close()

    return serve


async def _main(host: str, counts: dict[Behaviour, int]) -> None:
    addresses: dict[str, list[str]] = {}
    servers = []
    for behaviour, count in counts.items():
        for _ in range(count):
            server = await asyncio.start_server(_guarded(HANDLERS[behaviour]), host, 0)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            addresses.setdefault(behaviour.value, []).append(f"{host}:{port}")
    print(json.dumps(addresses), flush=True)
    # Serve until the parent closes our stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


@contextlib.contextmanager
def fake_members(host: str, counts: dict[Behaviour, int]) -> Iterator[dict[Behaviour, list[str]]]:
    """The fakes' process, serving `counts` listeners of each behaviour on `host`; each
    behaviour's addresses. Stopped on exit."""
    argv = [f"{b.value}={n}" for b, n in counts.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.fakes", host, *argv],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"testkit.fakes exited with {proc.wait()} before serving")
        yield {Behaviour(b): addresses for b, addresses in json.loads(line).items()}
    finally:
        proc.kill()
        proc.wait(10)


if __name__ == "__main__":
    wanted = dict(arg.split("=") for arg in sys.argv[2:])
    asyncio.run(_main(sys.argv[1], {Behaviour(b): int(n) for b, n in wanted.items()}))
