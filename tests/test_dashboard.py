"""The live dashboard in a real browser: headless Chromium (Debian's, from
etc/install-system-deps.sh) driven by Playwright, against a daemon running the packaged default
simulated configuration with a control port and a token.

Also writes the README's screenshots (images/dashboard.png, images/dashboard-phone.png).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Collector, free_port, wait_for
from radlogger.config import default_config_path, load_config
from radlogger.daemon import Daemon
from radlogger.dashboard import ViewerTap
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.losses import total_lost
from radlogger.pipeline import Pipeline

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-token"
IMAGES = Path(__file__).resolve().parent.parent / "images"



def _sync_api() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium missing: run etc/install-system-deps.sh")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    """The packaged default configuration, with control_port (a free port) and a token."""
    tmp = tmp_path_factory.mktemp("dash")
    text = default_config_path().read_text(encoding="utf-8")
    port = free_port()
    text = text.replace("[radlogger]\n", f"[radlogger]\ncontrol_port = {port}\n"
                        f"control_token = {TOKEN}\n", 1)
    text = text.replace("radlogger-data/", f"{tmp}/data/")
    path = tmp / "simulated.ini"
    path.write_text(text, encoding="utf-8")
    d = Daemon(load_config(path, env={}), path, env={}, embedded=True)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(d.run()), daemon=True)
    thread.start()
    try:
        assert d.wait_ready(30), "the daemon did not become ready"
        yield d, f"http://127.0.0.1:{port}"
    finally:
        d.request_stop()
        thread.join(30)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with _sync_api().sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


def open_page(browser: Any, url: str, **context: Any) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return ctx, page, errors


def counter(page: Any, name: str, key: str) -> int:
    text = page.inner_text(f"#comp-{name} .counter[data-key={key}]")
    return int(text.split()[1].replace(",", ""))


def test_page_shows_every_device_and_counters_rise(daemon: tuple[Daemon, str],
                                                   browser: Any) -> None:
    d, url = daemon
    ctx, page, errors = open_page(browser, f"{url}/#token={TOKEN}",
                                  viewport={"width": 1400, "height": 1000})
    try:
        page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
        assert d.pipeline is not None
        for name in d.pipeline.devices:  # every device: a card and a node of the graph
            page.wait_for_selector(f"#comp-{name}", timeout=15_000)
            assert page.locator(f"#node-device_{name}").count() == 1
        for name in d.pipeline.endpoints:
            if name != "viewer":
                page.wait_for_selector(f"#comp-{name}", timeout=15_000)
        wait_for(lambda: counter(page, "wsa1", "produced") > 0, 20, 0.1, "wsa1 produced")
        first = {n: counter(page, n, "produced") for n in ("wsa1", "widar")}
        wait_for(lambda: all(counter(page, n, "produced") > first[n] for n in first), 20, 0.1,
                 "counters rise")
        # topics: rate and last value; the scalar pico1.pulses gets a history
        page.wait_for_selector("#topic-pico1_pulses", timeout=20_000)
        page.wait_for_selector("#topic-wsa1_spectrum_dbm", timeout=20_000)
        # WIDAR products are selectable; the pico board panel lists evaluations
        page.wait_for_selector("#product-select option", state="attached", timeout=20_000)
        assert page.locator("#product-select option").count() >= 2
        page.wait_for_selector("#board-pico1 table.evaluations td", timeout=20_000)
        # the viewer's drops are by design: shown, never as a loss
        assert page.locator("#comp-viewer").count() == 0
        IMAGES.mkdir(exist_ok=True)
        # a few seconds of waterfall for the README's screenshot
        wait_for(lambda: page.evaluate("window.radlogger.payloads") >= 8, 30, 0.1)
        page.screenshot(path=str(IMAGES / "dashboard.png"), full_page=True)
        assert errors == []
    finally:
        ctx.close()


def spectrum_pixels(page: Any, canvas: str) -> int:
    """Pixels of the canvas that are the trace's colour (#58a6ff)."""
    return int(page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (Math.abs(d[i] - 0x58) < 40 && Math.abs(d[i+1] - 0xa6) < 40 && d[i+2] > 200) n++;
        return n; }""", canvas))


def test_spectrum_and_waterfall_draw(daemon: tuple[Daemon, str], browser: Any) -> None:
    _, url = daemon
    ctx, page, errors = open_page(browser, f"{url}/#token={TOKEN}")
    try:
        page.wait_for_selector("#spectrum-wsa1_spectrum_dbm", timeout=20_000)
        wait_for(lambda: spectrum_pixels(page, "#spectrum-wsa1_spectrum_dbm") > 200, 20, 0.1,
                 "the spectrum trace is drawn")
        # the axis is in MHz around the tuned 2.4 GHz
        text = page.evaluate("document.querySelector('#spec-wsa1_spectrum_dbm h3').textContent")
        assert "wsa1.spectrum_dbm" in text
        lit = page.evaluate("""() => {
            const c = document.querySelector('#waterfall-wsa1_spectrum_dbm');
            const d = c.getContext('2d').getImageData(0, 0, c.width, 3).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] > 60) n++;
            return n; }""")
        assert lit > 0, "the waterfall's newest row is drawn"
        assert errors == []
    finally:
        ctx.close()


def test_phone_sized_screen(daemon: tuple[Daemon, str], browser: Any) -> None:
    _, url = daemon
    ctx, page, errors = open_page(browser, f"{url}/#token={TOKEN}",
                                  viewport={"width": 390, "height": 844}, is_mobile=True,
                                  device_scale_factor=2)
    try:
        page.wait_for_selector("#comp-wsa1", timeout=15_000)
        wait_for(lambda: page.evaluate("window.radlogger.payloads") >= 3, 20, 0.1)
        # nothing wider than the screen but the scrollable graph and topic table
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        page.screenshot(path=str(IMAGES / "dashboard-phone.png"))
        assert errors == []
    finally:
        ctx.close()


def test_device_killed_mid_run_shows_reconnecting(daemon: tuple[Daemon, str],
                                                  browser: Any) -> None:
    d, url = daemon
    ctx, page, errors = open_page(browser, f"{url}/#token={TOKEN}")
    try:
        assert d.pipeline is not None
        dev = d.pipeline.devices["wsa1"]
        page.wait_for_selector("#comp-wsa1[data-state=running]", timeout=20_000)
        sim = dev.sim.current
        sim.stop()  # the instrument goes away
        try:
            page.wait_for_selector("#comp-wsa1[data-state=reconnecting]", timeout=20_000)
            assert page.locator("#comp-pico1[data-state=running]").count() == 1
        finally:
            sim.start()  # and comes back
        page.wait_for_selector("#comp-wsa1[data-state=running]", timeout=30_000)
        assert errors == []
    finally:
        ctx.close()


def test_token_is_enforced(daemon: tuple[Daemon, str], browser: Any) -> None:
    _, url = daemon
    for path in ("/events", "/live", "/status"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url + path, timeout=5)  # noqa: S310 - our own test server
        assert exc.value.code == 401
    req = urllib.request.Request(url + "/live?pattern=pico1.*&arrays=0",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        live = json.loads(resp.read())
    assert set(live["view"]["topics"]) <= {"pico1.pulses", "pico1.failure"}
    ctx, page, errors = open_page(browser, url + "/")  # no token: asked for one, no data
    try:
        page.wait_for_selector("#conn[data-state=unauthorized]", timeout=15_000)
        assert page.is_visible("#login")
        assert page.locator(".component").count() == 0
        page.fill("#token", "wrong")
        page.click("#login button")
        page.wait_for_selector("#login-msg:has-text('wrong token')", timeout=15_000)
        page.fill("#token", TOKEN)
        page.click("#login button")
        page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
        page.wait_for_selector("#comp-wsa1", timeout=15_000)
        # the browser logs the refused requests itself; nothing else may be an error
        assert [e for e in errors if "401" not in e] == []
    finally:
        ctx.close()


def test_viewer_drops_are_by_design(daemon: tuple[Daemon, str]) -> None:
    d, _ = daemon
    assert d.pipeline is not None
    viewer = d.pipeline.endpoints["viewer"]
    wait_for(lambda: viewer.stats.reasons().get("viewer_decimated", 0) > 0, 20, 0.05)
    assert set(viewer.stats.reasons()) == {"viewer_decimated"}
    assert total_lost(d.pipeline.snapshot()) == 0
    assert viewer.stats.balanced(viewer.pending) or viewer.pending




def test_the_tap_never_makes_a_finite_source_lossy(pipeline: Pipeline) -> None:
    """A counted run as fast as possible, a tiny tap inbox: the store gets every measurement,
    the tap keeps the latest, and what it skipped is counted by design, not as a loss."""
    n = 50_000
    pipeline.add_device(SyntheticDevice("syn", rate=0, count=n, chunk=500))
    col = pipeline.add_endpoint(Collector(), ["syn"])
    tap = pipeline.add_endpoint(ViewerTap(inbox_size=4, per_topic_hz=1000))
    pipeline.start()
    wait_for(lambda: pipeline.devices["syn"].state.value == "finished", 60, 0.01)
    assert pipeline.stop(10)
    assert len(col.items) == n
    assert pipeline.balanced()
    assert tap.stats.received == n
    assert set(tap.stats.reasons()) <= {"viewer_decimated"}
    assert tap.stats.handled + tap.stats.dropped == n
    assert total_lost(pipeline.snapshot()) == 0
    view = tap.view()
    assert view["topics"]["syn.value"]["count"] == n
    assert len(view["series"]["syn.value"]) >= 1


def test_the_tap_creates_no_demand(pipeline: Pipeline) -> None:
    """A lazy processing endpoint with only the viewer downstream stays idle."""
    tap = pipeline.add_endpoint(ViewerTap())
    assert not tap.wants("wsa1.spectrum")
    assert not pipeline.broker.has_demand("wsa1.spectrum")
