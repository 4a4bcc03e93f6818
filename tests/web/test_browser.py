"""The web phone in a real browser: Debian's headless Chromium (Selenium + chromedriver) with its microphone faked
from the speech WAV logs in to gateway A and calls bob, a voipgw softphone registered at Kamailio. bob hears the
WAV, the page shows bob's SAS, words and safety number, "SAS matches" makes the next call show verified, the page
logs no console error and requests nothing from any host but the gateway."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import chromium, console_errors, requested_urls
from tests.support.phones import SPEECH, PhoneProc
from tests.support.requires import requires
from tests.support.web_site import WEB_PW, WebSite, web_site
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav

pytestmark = [pytest.mark.integration, requires("kamailio", "chromium", "chromedriver", "selenium")]

WAIT_S = 30.0
INBOUND_AUDIO = """
const done = arguments[arguments.length - 1];
pc.getStats().then((stats) => {
  for (const s of stats.values()) {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      done({ packets: s.packetsReceived, energy: s.totalAudioEnergy || 0 });
      return;
    }
  }
  done({ packets: 0, energy: 0 });
});
"""
"""The page's received audio so far (its peer connection's inbound RTP statistics)."""
CALL_S = 9.0
"""Longer than the clip (7.7 s; Chromium loops it): all of it reaches bob."""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[WebSite]:
    with web_site(tmp_path) as s:
        yield s


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def is_shown(driver: webdriver.Chrome, element_id: str) -> bool:
    return bool(driver.find_element(By.ID, element_id).is_displayed())


def wait_until(driver: webdriver.Chrome, what: Callable[[webdriver.Chrome], bool], timeout: float = WAIT_S) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(what)
    except TimeoutException:
        notice = driver.find_element(By.ID, "notice").text
        raise AssertionError(f"page notice {notice!r}; console {driver.get_log('browser')}") from None


def call_bob(driver: webdriver.Chrome, phone: PhoneProc, sas_matches: bool) -> dict[str, str]:
    """Dial bob from the page, keep the call up for CALL_S, optionally click "SAS matches", hang up by click;
    returns what the page showed while the call was up."""
    driver.set_window_size(900, 960)
    driver.find_element(By.ID, "dial-to").clear()
    driver.find_element(By.ID, "dial-to").send_keys("bob")
    driver.find_element(By.ID, "dial").click()
    wait_until(driver, lambda d: text(d, "call-state") == "established" and bool(text(d, "call-sas")))
    shown = {k: text(driver, f"call-{k}") for k in ("security", "sas", "sas-words", "safety", "remote")}
    wait_until(driver, lambda d: d.execute_script("return document.getElementById('call-safety-qr').naturalWidth") > 0)
    if sas_matches and (folder := os.environ.get("VOIPGW_SCREENSHOTS")):  # `make screenshots`: the README's picture
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / "web-phone-call.png"))
    time.sleep(CALL_S)  # the fake microphone plays the WAV in real time: what bob records
    if sas_matches:
        driver.find_element(By.ID, "sas-matches").click()
        wait_until(driver, lambda d: "SAS confirmed" in text(d, "call-security"))
    driver.find_element(By.ID, "hangup").click()
    wait_until(driver, lambda d: text(d, "call-state") == "ended")
    assert phone.wait(30) == 0, phone.log()
    return shown


def test_the_browser_calls_a_softphone_and_verifies_it_by_the_sas(site: WebSite) -> None:
    base = f"http://127.0.0.1:{site.gw.web_port}"
    with chromium(site.workdir, SPEECH) as driver:
        driver.get(base + "/")
        wait_until(driver, lambda d: is_shown(d, "login"))
        driver.find_element(By.ID, "user").send_keys("alice")
        driver.find_element(By.ID, "password").send_keys("not-the-password")
        driver.find_element(By.ID, "login-button").click()
        wait_until(driver, lambda d: text(d, "notice") == "wrong user name or password")
        driver.find_element(By.ID, "password").clear()
        driver.find_element(By.ID, "password").send_keys(WEB_PW)
        driver.find_element(By.ID, "login-button").click()
        wait_until(driver, lambda d: d.find_element(By.ID, "phone").is_displayed() and text(d, "who") == "alice")

        first = site.bob()
        try:
            shown = call_bob(driver, first, sas_matches=True)
        finally:
            first.stop()
        summary = first.summary()
        wait_until(driver, lambda d: "bob@127.0.0.1 verified, 1 call(s)" in text(d, "contacts"))
        assert "to bob@127.0.0.1, secure, unverified (inside: remote hangup)" in text(driver, "history")
        heard_wav = shutil.copy(first.wav, site.workdir / "first-call.wav")  # the next call records over it

        # A reload resumes the session (the tab's token), and the next call shows bob verified.
        driver.refresh()
        wait_until(driver, lambda d: d.find_element(By.ID, "phone").is_displayed() and text(d, "who") == "alice")
        second = site.bob()
        try:
            again = call_bob(driver, second, sas_matches=False)
        finally:
            second.stop()

        # bob calls alice: the page rings (with the gateway's label), a click answers, audio crosses both ways.
        caller = site.bob_calls_alice()
        try:
            wait_until(driver, lambda d: text(d, "call-state") == "ringing" and is_shown(d, "answer"))
            ringing_as = text(driver, "call-remote")
            driver.find_element(By.ID, "answer").click()
            wait_until(driver, lambda d: text(d, "call-state") == "established" and bool(text(d, "call-sas")))
            incoming_sas = text(driver, "call-sas")
            time.sleep(CALL_S)
            received = driver.execute_async_script(INBOUND_AUDIO)
            driver.find_element(By.ID, "hangup").click()
            wait_until(driver, lambda d: text(d, "call-state") == "ended")
            assert caller.wait(30) == 0, caller.log()
        finally:
            caller.stop()

        # bob reinstalled (a new key) while alice has him verified: the policy blocks the call; the page says so full
        # page, and offers only OK.
        reinstalled = site.bob("bob-reinstalled")
        try:
            driver.find_element(By.ID, "dial-to").clear()
            driver.find_element(By.ID, "dial-to").send_keys("bob")
            driver.find_element(By.ID, "dial").click()
            wait_until(driver, lambda d: is_shown(d, "key-warning"))
            key_warning = text(driver, "key-warning-text")
            buttons = [
                b for b in ("key-warning-ok", "key-warning-continue", "key-warning-hangup") if is_shown(driver, b)
            ]
            driver.find_element(By.ID, "key-warning-ok").click()
            wait_until(driver, lambda d: not is_shown(d, "key-warning"))
        finally:
            reinstalled.stop()

        errors = console_errors(driver)
        urls = requested_urls(driver)

    assert shown["security"] == "secure, unverified" and shown["remote"] == "bob@127.0.0.1", shown
    assert shown["sas"] == summary["sas"], (shown, summary)
    assert shown["sas-words"] == f"({' '.join(summary['sas_words'])})", (shown, summary)
    assert shown["safety"].split() == [summary["safety_number"][i : i + 5] for i in range(0, 60, 5)], shown
    assert again["security"].startswith("secure, verified"), again
    finished = site.gw.status_json()["finished"]
    assert [(c["direction"], c["sas_check"]) for c in finished] == [
        ("outbound", "confirm"),
        ("outbound", None),
        ("inbound", None),
        ("outbound", None),
    ], finished
    heard = compare_audio(read_wav(SPEECH), read_wav(heard_wav))
    assert heard.windowed >= 0.8, heard
    assert ringing_as.endswith("bob") and incoming_sas == caller.summary()["sas"], (ringing_as, incoming_sas)
    assert received["packets"] > 300 and received["energy"] > 0.01, received  # bob's speech reached the page
    to_bob = compare_audio(read_wav(SPEECH), read_wav(caller.wav))
    assert to_bob.windowed >= 0.8, to_bob
    assert "identity key of bob@127.0.0.1 changed" in key_warning and "accept-key" in key_warning, key_warning
    assert buttons == ["key-warning-ok"], buttons
    assert errors == [], errors
    # The browser's own chrome:// pages (its start page) are not network requests; everything else is the gateway.
    network = [u for u in urls if not u.startswith(("chrome://", "chrome-untrusted://", "data:"))]
    gateway = (base + "/", f"ws://127.0.0.1:{site.gw.web_port}/")
    assert network and all(u.startswith(gateway) for u in network), network
