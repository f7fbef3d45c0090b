"""The Temporal UI as an operator uses it: headless Debian Chromium, driven by Playwright,
types the README's unhealthy-clusters query into the workflow list of a dev server started
as `dev up` starts it, and finds the monitor of the cluster with a killed member, not the
healthy one's; the monitor's page shows its summary and current details."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from client.api import UNHEALTHY_QUERY, ReplicanteClient
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble
from tests.conftest import INSTALL_HINT
from tests.helpers import Monitor, spec_of, zk_spec
from tests.test_devstack import free_port
from worker.core import core_worker
from worker.settings import Settings

# The UI renders in a browser on a loaded 2-core machine: wait generously on what it shows.
UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    """A dev server with its Web UI, started by the class `dev up` uses (which registers
    the search attributes). The session's `temporal_env` runs without the UI."""
    server = TemporalDevServer(
        tmp_path_factory.mktemp("ui-home"), port=free_port(), ui_port=free_port()
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; Playwright's own browser download cannot work here."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(f"no chromium for the browser test: apt-get install chromium ({INSTALL_HINT})")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium)
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def screenshot_on_failure(page: Page, path: Path) -> AsyncIterator[None]:
    """Headless, the screenshot is the only way to see what the UI showed instead."""
    try:
        yield
    except BaseException:
        await page.screenshot(path=path, full_page=True)
        print(f"screenshot of the page at the failure: {path}")
        raise


async def wait_listed_unhealthy(api: ReplicanteClient, cluster_id: str) -> None:
    """Until visibility lists the cluster as `cluster ls --unhealthy` does: the monitor
    upserts its health after storing the change's events."""
    deadline = time.monotonic() + 30
    while True:
        listed = [c.cluster_id for c in await api.clusters(unhealthy=True)]
        if listed == [cluster_id]:
            return
        assert time.monotonic() < deadline, f"cluster ls --unhealthy lists {listed}"
        await asyncio.sleep(0.2)


async def test_ui_lists_the_unhealthy_monitor_by_the_readme_query(
    browser: Browser,
    ui_server: TemporalDevServer,
    zk_healthy: ZooKeeperEnsemble,
    tmp_path: Path,
) -> None:
    settings = Settings(
        temporal_address=ui_server.address,
        task_queue="ui-test",
        home=tmp_path,
        store_path=tmp_path / "events.db",
    )
    api = await ReplicanteClient.connect(settings)
    suffix = uuid.uuid4().hex[:6]
    follower = next(n for n in zk_healthy.members if n != zk_healthy.leader())
    sick = zk_spec(zk_healthy, f"ui-sick-{suffix}")
    # The members that stay up: a cluster that keeps healthy through the kill.
    fine = spec_of(
        "zookeeper",
        "zk",
        [a for n, a in zip(zk_healthy.members, zk_healthy.addresses, strict=True) if n != follower],
        f"ui-fine-{suffix}",
        1.0,
        {},
    )
    page = await browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        async with core_worker(api.temporal, settings.task_queue, api.store):
            for spec in (sick, fine):
                await api.apply(spec)  # as `replicante cluster apply` starts a monitor
                await Monitor(api.temporal, api.store, spec).until("cluster.health_changed")
            zk_healthy.kill_member(follower)
            await Monitor(api.temporal, api.store, sick).until("node.down", f"zk{follower}")
            await wait_listed_unhealthy(api, sick.cluster_id)

            async with screenshot_on_failure(page, tmp_path / "ui.png"):
                await page.goto(f"{ui_server.ui_url}/namespaces/default/workflows")
                sick_row = page.get_by_role("link", name=f"monitor/{sick.cluster_id}")
                fine_row = page.get_by_role("link", name=f"monitor/{fine.cluster_id}")
                # Both listed before the query: the healthy one's absence then means something.
                await expect(sick_row).to_be_visible(timeout=UI_TIMEOUT_MS)
                await expect(fine_row).to_be_visible(timeout=UI_TIMEOUT_MS)

                await page.get_by_test_id("toggle-manual-query").click()
                box = page.get_by_test_id("workflow-manual-search-input")
                await box.fill(UNHEALTHY_QUERY)
                await box.press("Enter")
                await expect(fine_row).to_have_count(0, timeout=UI_TIMEOUT_MS)
                await expect(sick_row).to_be_visible(timeout=UI_TIMEOUT_MS)
                assert parse_qs(urlsplit(page.url).query)["query"] == [UNHEALTHY_QUERY]

                await sick_row.click()
                await page.get_by_role("tab", name="User Metadata").click()
                # The UI renders summary and details as markdown, each in an iframe.
                summary = page.frame_locator("#user-metadata-summary")
                details = page.frame_locator("#user-metadata-current-details")
                await expect(
                    summary.get_by_text(f"monitor zookeeper cluster {sick.cluster_id}")
                ).to_be_visible(timeout=UI_TIMEOUT_MS)
                await expect(details.get_by_text("degraded")).to_be_visible(timeout=UI_TIMEOUT_MS)
                await expect(
                    details.get_by_role("cell", name=f"node_down/zk{follower}")
                ).to_be_visible(timeout=UI_TIMEOUT_MS)
    finally:
        await page.close()
        api.close()
