"""What the test-bed launchers (baresip, pjsua2, rtpengine) share: a port block that the caller lends or that is
reserved at start and released at stop, RTP ports from a fixed offset in it, and use as a context manager.

Reserves ports only through tests/testbed/ports.py; starting and stopping the process is each launcher's own.
"""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Self

from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.proc import TestbedError


class PortedProcess:
    """Base of a launcher whose process uses one port block: ``start()`` (which calls ``_reserve_ports``) and
    ``stop()`` (which calls ``_release_ports``) are the subclass's."""

    NAME: ClassVar[str]
    """Named in the error for ports asked of a launcher that is not started."""
    BLOCK_SIZE: ClassVar[int]
    RTP_OFFSET: ClassVar[int]

    def __init__(self, ports: PortBlock | None) -> None:
        self._own_ports = ports is None
        self._ports = ports

    @property
    def ports(self) -> PortBlock:
        if self._ports is None:
            raise TestbedError(f"{self.NAME} not started")
        return self._ports

    @property
    def rtp_range(self) -> tuple[int, int]:
        return self.ports.span(self.RTP_OFFSET, self.ports.count - self.RTP_OFFSET)

    def _reserve_ports(self) -> None:
        """Reserve a block, unless one was lent."""
        if self._ports is None:
            self._ports = reserve_block(self.BLOCK_SIZE)

    def _release_ports(self) -> None:
        """Release the block if it was reserved here (a lent one stays the lender's); idempotent."""
        if self._own_ports and self._ports is not None:
            self._ports.release()
            self._ports = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> int:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
