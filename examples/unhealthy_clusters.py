"""List unhealthy clusters with their findings and latest events (README: Scripting)."""

from client.api import ReplicanteClient
from client.script import run_script


async def main() -> None:
    api = await ReplicanteClient.connect()  # settings from the environment, as the CLI
    for cluster in await api.clusters(unhealthy=True):
        status = await api.status(cluster.cluster_id)
        print(cluster.cluster_id, status.health, [f.code for f in status.findings])
        for stored in await api.events(cluster.cluster_id, limit=5):
            print("   ", stored.event.at, stored.event.type, stored.event.message)


run_script(main())  # asyncio.run, then an exit that dodges temporalio/sdk-python#300
