"""Starts and stops the gateway's operations endpoints (control socket, optional metrics HTTP) from its config, so
the gateway core makes one call. It must never touch calls: it only serves the snapshot and metrics it is given.
"""

from __future__ import annotations

from pathlib import Path

from voipgw.ops.config import ConfigError, GatewayConfig
from voipgw.ops.control import ControlError, ControlServer, SnapshotFn, socket_path
from voipgw.ops.metrics import GatewayMetrics, MetricsError, MetricsServer


class OpsServices:
    """``async with OpsServices(config, home, gateway.snapshot, metrics) as ops:`` serves until the block ends.

    Start-up failures (socket path unusable, another gateway running, metrics port taken) raise
    :class:`ConfigError` with one line, like every other start-up mistake.
    """

    def __init__(self, config: GatewayConfig, home: Path, snapshot: SnapshotFn, metrics: GatewayMetrics) -> None:
        self.control = ControlServer(socket_path(home, config.control_socket), snapshot)
        self._metrics = metrics
        self._metrics_config = config.metrics
        self.metrics_server: MetricsServer | None = None

    async def start(self) -> None:
        try:
            await self.control.start()
        except ControlError as exc:
            raise ConfigError(str(exc)) from None
        if self._metrics_config.enabled:
            host, port = self._metrics_config.address
            try:
                self.metrics_server = MetricsServer(self._metrics, host, port)
            except MetricsError as exc:
                await self.control.close()
                raise ConfigError(f"metrics.address: {exc}") from None

    async def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        await self.control.close()

    async def __aenter__(self) -> OpsServices:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
