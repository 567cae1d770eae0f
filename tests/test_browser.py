"""End to end in a real browser: streamlit run + headless Debian chromium via playwright.

Skips (with the reason) when /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def app_url(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    port = _free_port()
    env = dict(os.environ, MRT_STUDIO_HOME=str(tmp_path / "studio"), PYTHONPATH=ROOT,
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", os.path.join(ROOT, "streamlit_app.py"),
                             "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_tune_rerun_in_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        try:
            # first, on the fresh server: a page opened by its own URL loads the default model, no error
            fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
            fresh.goto(app_url.rstrip("/") + "/ranges")
            expect(fresh.get_by_text("Candidates").first).to_be_visible(timeout=120_000)
            fresh.wait_for_timeout(3000)
            assert "Traceback" not in fresh.inner_text("body")
            fresh.close()
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)
            page.goto(app_url)
            expect(page.get_by_text("Loaded: lenet")).to_be_visible()
            page.screenshot(path=str(shots / "model.png"))

            page.locator('[data-testid="stSidebarNav"]').get_by_text("Tune", exact=True).click()
            expect(page.get_by_role("button", name="Rerun")).to_be_visible()
            expect(page.get_by_text("Previous top-1")).to_be_visible()
            assert _metric(page, "Previous top-1") == "—"

            # the node selectbox starts on the first op node; restore it (compute it in float)
            page.get_by_text("Restore (float)").click()
            page.get_by_role("button", name="Apply to node").click()
            expect(page.get_by_text(re.compile(r"Changed from the defaults: conv0_fwd"))).to_be_visible()

            page.get_by_role("button", name="Rerun").click()
            expect(page.get_by_text(re.compile(r"Done in [0-9.]+ s"))).to_be_visible()
            expect(page.locator('[data-testid="stMetric"]').filter(has_text="Previous top-1")
                   .locator('[data-testid="stMetricValue"]')).not_to_have_text("—")
            quant = _metric(page, "Quant top-1")
            assert re.fullmatch(r"\d+\.\d\d%", quant), quant
            assert re.fullmatch(r"[\d,]+", _metric(page, "IOPs / sample (current config)"))
            page.get_by_role("button", name="Diagnose").click()
            expect(page.get_by_text(re.compile(r"Diagnosed in [0-9.]+ s"))).to_be_visible()
            page.screenshot(path=str(shots / "tune.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "tune.png").stat().st_size > 10_000
    keep = os.environ.get("MRT_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shots / "tune.png", os.path.join(keep, "tune.png"))
