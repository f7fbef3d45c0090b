"""Pause, query and resume a monitor with nothing but temporalio (README: Scripting)."""

import asyncio
import os
import sys

from temporalio.client import Client


async def main(cluster_id: str) -> None:
    client = await Client.connect(os.environ.get("REPLICANTE_TEMPORAL_ADDRESS", "127.0.0.1:7233"))
    monitor = client.get_workflow_handle(f"monitor/{cluster_id}")
    await monitor.signal("pause", "maintenance window")
    status = await monitor.query("status")  # plain JSON: a dict
    print(status["health"], status["paused"], status["view"]["leader"])
    await monitor.signal("resume", "done")


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "playground"))
sys.stdout.flush()
os._exit(0)  # skip teardown: temporalio/sdk-python#300 can abort a finished short script
