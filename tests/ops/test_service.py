"""The operations endpoints together, as the gateway starts them: status over the socket, metrics over HTTP."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voipgw.ops.config import ConfigError, gateway_config_from_mapping
from voipgw.ops.control import render_status, request
from voipgw.ops.metrics import GatewayMetrics
from voipgw.ops.service import OpsServices


@pytest.fixture
def home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vgsvc", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def config(metrics: dict[str, Any]) -> Any:
    return gateway_config_from_mapping(
        {
            "outside": {"registrar": "127.0.0.1"},
            "users": {"a": {"outside_aor": "a@pbx.test", "inside_password": "phone-pw"}},
            "metrics": metrics,
        }
    )


def test_status_and_metrics_served_together(home: Path) -> None:
    metrics = GatewayMetrics()
    calls: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    def snapshot() -> dict[str, Any]:
        return {"registrations": [], "calls": list(calls)}

    async def main() -> None:
        async with OpsServices(config({"enabled": True, "address": "127.0.0.1:0"}), home, snapshot, metrics) as ops:
            assert ops.metrics_server is not None
            port = ops.metrics_server.port
            calls.append({"call_id": "c9", "security": "NOT SECURE", "codec": "PCMA>opus", "frames_in": 7})
            metrics.call_started("NOT SECURE", transcoding=True)
            seen["status"] = render_status(await asyncio.to_thread(request, home / "gateway.sock"))

            def scrape() -> str:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                    return str(resp.read().decode())

            seen["metrics"] = await asyncio.to_thread(scrape)
            seen["server"] = ops.metrics_server

    asyncio.run(main())
    assert "NOT SECURE" in seen["status"] and "PCMA>opus" in seen["status"]
    assert 'voipgw_calls_active{security="not_secure"} 1.0' in seen["metrics"]
    assert "voipgw_transcoded_calls_total 1.0" in seen["metrics"]
    assert not (home / "gateway.sock").exists()
    assert not seen["server"].running


def test_metrics_off_by_default_and_busy_port_is_a_config_error(home: Path) -> None:
    async def off() -> None:
        async with OpsServices(config({}), home, dict, GatewayMetrics()) as ops:
            assert ops.metrics_server is None

    asyncio.run(off())

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]

        async def clash() -> None:
            await OpsServices(
                config({"enabled": True, "address": f"127.0.0.1:{port}"}), home, dict, GatewayMetrics()
            ).start()

        with pytest.raises(ConfigError, match=rf"^metrics\.address: metrics endpoint 127\.0\.0\.1:{port}: Address"):
            asyncio.run(clash())
    assert not (home / "gateway.sock").exists(), "a failed start leaves no control socket behind"
