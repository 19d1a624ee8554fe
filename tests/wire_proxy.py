"""The wire proxy the tests put between pac-run and a driver: the fault injector (robots/contract/faults.py) with
at most one rule, dropping the driver messages a predicate picks (a frozen camera). It records every command
pac-run sent (`commands`), on real loopback sockets, no mocks.
"""

from __future__ import annotations

from collections.abc import Callable

from robots.contract.faults import FaultInjector, drop
from robots.contract.wire import Envelope


class WireProxy(FaultInjector):
    def __init__(self, driver_pub: str, driver_cmd: str, drop_if: Callable[[Envelope], bool] | None = None):
        super().__init__(driver_pub, driver_cmd, [drop(match=drop_if)] if drop_if is not None else [])
