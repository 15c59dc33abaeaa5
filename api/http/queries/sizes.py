"""The size check of a submitted job's networks (``api.runtime.limits.check_size``), once per
process for the same networks: counting them runs each on PyTorch's meta device, about 0.1 s of
CPU for a ResKD run's four, most of a submission's time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from api.runtime.limits import check_size
from api.runtime.settings import Settings
from search.config import RunConfig

ENTRIES = 256


class SizesPassed:
    """The networks (with their data and the caps) whose sizes passed ``check_size`` in this
    process, the ``entries`` most recently submitted. Their sizes depend on nothing else
    (``network_sizes`` reads a config's ``nets`` and ``data_info`` alone). A config over a cap
    is counted each time (its error names the network). Thread safe: submissions run on the
    API's thread pool."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self.entries = entries
        self._passed: OrderedDict[Hashable, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, config: RunConfig, settings: Settings) -> None:
        """``check_size`` of ``config`` under ``settings``' caps, unless its networks passed."""
        nets = tuple(net.model_dump_json() for _, net in config.nets())
        key = (nets, config.data_info(), settings.max_job_params, settings.max_job_mflops)
        with self._lock:
            if key in self._passed:
                self._passed.move_to_end(key)
                return
        check_size(config, max_params=settings.max_job_params, max_mflops=settings.max_job_mflops)
        with self._lock:
            self._passed[key] = None
            while len(self._passed) > self.entries:
                self._passed.popitem(last=False)


check_size_once = SizesPassed().check
