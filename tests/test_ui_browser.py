"""The Temporal UI as an operator uses it: headless Debian Chromium, driven by Playwright,
types the README's unhealthy-clusters query into the workflow list of a dev server started
as `dev up` starts it, and finds the monitor of the cluster with a killed member, not the
healthy one's; the monitor's page shows its summary and current details. With payload
encryption, the UI started with `--ui-codec-endpoint` as `dev up` starts it shows a
monitor's input encrypted until the browser logs in to the codec server, then decoded."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from client.api import UNHEALTHY_QUERY, ReplicanteClient
from client.codec_server import COOKIE, GRANTED
from config.codec import TOKENS_ENV
from config.settings import REPO_ROOT, Settings
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble
from testkit.specs import spec_of, zk_spec
from tests.conftest import INSTALL_HINT
from tests.helpers import Monitor
from tests.test_devstack import free_port
from tests.test_imports import CLI
from worker.codec import ENCODING
from worker.core import core_worker

# The UI renders in a browser on a loaded 2-core machine: wait generously on what it shows.
UI_TIMEOUT_MS = 30_000
COULD_NOT = "Codec Server could not connect"
CODEC_SERVER = [sys.executable, "-c", CLI, "codec-server"]


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


async def include_credentials(page: Page, codec_url: str) -> None:
    """What an operator does in the UI's codec server settings: the dev server's
    `--ui-codec-endpoint` has no "include credentials" to go with it, so the browser's own
    setting, which the UI keeps in localStorage, takes the endpoint and the credentials."""
    # Its icon's test id tells the codec server's last status: configured, error, ...
    await page.locator("[data-testid^='data-encoder-status']").click()
    await page.get_by_text("Use my browser setting and ignore Cluster-level setting.").click()
    await page.get_by_label("Codec Server browser endpoint").fill(codec_url)
    await page.get_by_text("Include cross-origin credentials").click()
    await page.get_by_role("button", name="Apply").click()
    stored = await page.evaluate("localStorage.getItem('includeCredentials')")
    assert stored == "true"


@pytest.fixture
def codec_ui(tmp_path: Path) -> Iterator[tuple[TemporalDevServer, str]]:
    """A dev server whose UI decodes through a codec server at the returned URL, as
    `dev up` starts it with codec keys set."""
    codec_url = f"http://127.0.0.1:{free_port()}"
    server = TemporalDevServer(
        tmp_path / "codec-ui",
        port=free_port(),
        ui_port=free_port(),
        extra_args=["--ui-codec-endpoint", codec_url],
    )
    server.start()
    try:
        yield server, codec_url
    finally:
        server.stop()


async def test_ui_decodes_through_the_codec_server_once_the_browser_logged_in(
    browser: Browser,
    codec_ui: tuple[TemporalDevServer, str],
    zk_healthy: ZooKeeperEnsemble,
    tmp_path: Path,
) -> None:
    ui_server, codec_url = codec_ui
    assert ui_server.ui_url is not None
    key, token = base64.b64encode(os.urandom(32)).decode(), secrets.token_urlsafe(24)
    (tmp_path / "tokens").write_text(f"{token}\n")
    settings = Settings(
        temporal_address=ui_server.address,
        task_queue="ui-codec-test",
        home=tmp_path,
        store_path=tmp_path / "events.db",
        codec_key=f"k1:{key}",
    )
    env = {
        **os.environ,
        "REPLICANTE_CODEC_KEY": f"k1:{key}",
        TOKENS_ENV: str(tmp_path / "tokens"),
    }
    codec_log = tmp_path / "codec-server.log"
    listen = codec_url.removeprefix("http://")
    with codec_log.open("wb") as log:
        codec_server = subprocess.Popen(
            [*CODEC_SERVER, "--listen", listen, "--allow-origin", ui_server.ui_url],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api = await ReplicanteClient.connect(settings)
    spec = zk_spec(zk_healthy, f"ui-codec-{uuid.uuid4().hex[:6]}")
    address = spec.nodes[0].address
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        async with core_worker(api.temporal, settings.task_queue, api.store):
            await api.apply(spec)
            monitor = Monitor(api.temporal, api.store, spec)
            await monitor.until("cluster.health_changed")
            run_id = (await monitor.handle.describe()).run_id
            workflow_page = (
                f"{ui_server.ui_url}/namespaces/default/workflows/"
                f"{quote(monitor.handle.id, safe='')}/{run_id}/history"
            )
            history = await monitor.handle.fetch_history()  # as the server holds it
            started = history.events[0].workflow_execution_started_event_attributes
            [sealed] = started.input.payloads
            assert sealed.metadata["encoding"] == ENCODING
            async with screenshot_on_failure(page, tmp_path / "ui.png"):
                await page.goto(f"{ui_server.ui_url}/namespaces/default/workflows")
                await include_credentials(page, codec_url)
                # Not logged in: the codec server refuses, the UI shows the ciphertext.
                await page.goto(workflow_page)
                await expect(page.locator("#content").get_by_text(COULD_NOT)).to_be_visible(
                    timeout=UI_TIMEOUT_MS
                )
                ciphertext = base64.b64encode(sealed.data).decode()
                await expect(page.get_by_text(ciphertext[:40])).to_be_visible(timeout=UI_TIMEOUT_MS)
                await expect(page.get_by_text(address)).to_have_count(0, timeout=UI_TIMEOUT_MS)

                await page.goto(f"{codec_url}/login?token={token}")
                await expect(page.locator("body")).to_have_text(GRANTED, timeout=UI_TIMEOUT_MS)
                # The UI's own cookies are there too: a host's cookies ignore ports.
                [cookie] = [c for c in await context.cookies(codec_url) if c["name"] == COOKIE]
                assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
                assert token not in cookie["value"]

                await page.goto(workflow_page)
                await expect(page.get_by_text(f'"{address}"').first).to_be_visible(
                    timeout=UI_TIMEOUT_MS
                )
                await expect(page.get_by_text(f'"{spec.cluster_id}"').first).to_be_visible(
                    timeout=UI_TIMEOUT_MS
                )
                await expect(page.locator("#content").get_by_text(COULD_NOT)).to_have_count(
                    0, timeout=UI_TIMEOUT_MS
                )

                await page.goto(f"{codec_url}/logout")
                assert COOKIE not in [c["name"] for c in await context.cookies(codec_url)]
            await monitor.handle.terminate("test over")
    finally:
        await context.close()
        api.close()
        codec_server.send_signal(signal.SIGINT)
        codec_server.wait(10)
    logged = codec_log.read_text()
    decodes = [line for line in logged.splitlines() if "POST /decode" in line]
    assert any(" 401 " in line for line in decodes), logged  # before the login
    assert " 200 " in decodes[-1], logged  # after it
    assert token not in logged and key not in logged
