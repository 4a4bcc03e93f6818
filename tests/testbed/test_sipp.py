"""Self-tests of the sipp runner: direct UAC -> UAS, the same through a record-routing Kamailio (the
scenario edits), and a run that must be reported as failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed.capture import RawCapture
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import reserve_block
from tests.testbed.sipp import SippUas, run_uac

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "sipp")]


def test_uac_to_uas_five_calls_all_succeed(tmp_path: Path) -> None:
    with SippUas(tmp_path, rtp_echo=True) as uas:
        result = run_uac(tmp_path, uas.address, calls=5, rate=20, service="bob", timeout=20)
        assert result.all_ok, result.log[-3000:]
        assert (result.created, result.successful, result.failed) == (5, 5, 0)
    assert uas.result is not None and uas.result.successful == 5, uas.result


def test_uac_to_uas_through_record_routing_kamailio(tmp_path: Path) -> None:
    with Kamailio(tmp_path) as kam, SippUas(tmp_path) as uas:
        with RawCapture(kam.port, kam.port) as cap:
            result = run_uac(
                tmp_path,
                uas.address,
                calls=5,
                rate=20,
                service="bob",
                timeout=20,
                proxy=f"127.0.0.1:{kam.port}",
            )
        assert result.all_ok, result.log[-3000:]
        assert result.successful == 5
    assert uas.result is not None and uas.result.successful == 5
    # In-dialog requests followed the Record-Route through the proxy (the scenario edits), not the Contact.
    to_proxy = [p.payload.split(b" ", 1)[0] for p in cap.packets if p.dst_port == kam.port]
    assert to_proxy.count(b"INVITE") >= 5
    assert to_proxy.count(b"ACK") >= 5
    assert to_proxy.count(b"BYE") >= 5


def test_calls_to_nobody_are_reported_failed(tmp_path: Path) -> None:
    with reserve_block(1) as nobody:
        result = run_uac(tmp_path, f"127.0.0.1:{nobody[0]}", calls=2, rate=20, service="nobody", timeout=2)
    assert not result.all_ok
    assert result.returncode != 0
    assert result.successful == 0


def test_twenty_concurrent_pcap_calls_have_their_rtp_echoed(tmp_path: Path) -> None:
    with SippUas(tmp_path, rtp_echo=True) as uas, RawCapture(uas.media_port, uas.media_port) as cap:
        result = run_uac(
            tmp_path, uas.address, calls=20, rate=20, limit=20, service="bob",
            scenario_name="uac_pcap", duration_ms=1500, timeout=30,
        )  # fmt: skip
        assert result.all_ok, result.log[-3000:]
        assert result.successful == 20
    to_uas = [p for p in cap.packets if p.dst_port == uas.media_port and p.rtp() is not None]
    echoed = [p for p in cap.packets if p.src_port == uas.media_port and p.rtp() is not None]
    assert len({p.src_port for p in to_uas}) == 20  # one media port per concurrent call
    assert len(echoed) >= 0.9 * len(to_uas) > 0
