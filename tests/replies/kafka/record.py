"""Record the replies the Kafka parsers read, from a running cluster, into this folder.

    .venv/bin/python tests/replies/kafka/record.py HOST:PORT NAME

Asks the broker at HOST:PORT what the probe asks and writes each reply, header and body
exactly as the broker sent them, to NAME.<request>.v<version>.bin. README.md says what
state the cluster was in for each recorded set.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from kafka.protocol.parser import KafkaProtocol

import activities.kafka.connection
from activities.kafka.connection import (
    Link,
    describe_cluster_request,
    metadata_request,
    min_isr_request,
    offsets_request,
    quorum_request,
)
from activities.kafka.probe import CONSUMER_REPLICA, DEBUGGING_REPLICA
from activities.kafka.replies import parse_metadata

HERE = Path(__file__).resolve().parent
frames: list[bytes] = []


class Recorder(KafkaProtocol):  # type: ignore[misc]
    """Keeps each reply's bytes as they came off the wire."""

    def _process_response(self, read_buffer: Any) -> Any:
        frames.append(bytes(read_buffer))
        return super()._process_response(read_buffer)


async def ask(link: Link, name: str, what: str, request: Any) -> Any:
    reply = await asyncio.wait_for(link.request(request), 10)
    path = HERE / f"{name}.{what}.v{request.API_VERSION}.bin"
    path.write_bytes(frames[-1])
    print(path.name)
    return reply


async def record(host: str, port: int, name: str) -> None:
    setattr(activities.kafka.connection, "KafkaProtocol", Recorder)  # noqa: B010
    link = Link(host, port)
    await ask(link, name, "describe_cluster", describe_cluster_request())
    # The link's first exchange was ApiVersions.
    (HERE / f"{name}.api_versions.v3.bin").write_bytes(frames[0])
    metadata = await ask(link, name, "metadata", metadata_request())
    try:
        await ask(link, name, "describe_quorum", quorum_request())
    except (OSError, TimeoutError) as e:
        print(f"describe_quorum: {e!r}")
        link = Link(host, port)
    partitions = parse_metadata(metadata)
    await ask(link, name, "describe_configs", min_isr_request({p.topic for p in partitions}))
    await ask(link, name, "list_offsets_hw", offsets_request(partitions, CONSUMER_REPLICA))
    await ask(link, name, "list_offsets_leo", offsets_request(partitions, DEBUGGING_REPLICA))
    link.close()


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    asyncio.run(record(host, int(port), sys.argv[2]))


if __name__ == "__main__":
    main()
