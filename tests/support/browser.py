"""Test helper: Debian's headless Chromium driven by Selenium through Debian's chromedriver (never a downloaded
browser or driver), with the microphone faked from a WAV file and the background networking that the closed test
network refuses turned off. ``with chromium(workdir, wav) as driver:``; quit (browser and driver stopped) on exit.
The browser's console and network events are kept (``console_errors``, ``requested_urls``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-features=MediaRouter,OptimizationHints,Translate",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",  # getUserMedia is granted without a prompt
    "--autoplay-policy=no-user-gesture-required",
)


@contextmanager
def chromium(workdir: Path, wav: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={workdir / 'chromium-profile'}", f"--use-file-for-fake-audio-capture={wav}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The page's console messages at level SEVERE (errors, failed loads) so far."""
    return [str(e["message"]) for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the browser requested or opened a WebSocket to, from the DevTools network events so far."""
    urls: list[str] = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(str(msg["params"]["request"]["url"]))
        elif msg.get("method") == "Network.webSocketCreated":
            urls.append(str(msg["params"]["url"]))
    return urls
