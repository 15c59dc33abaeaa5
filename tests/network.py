"""The tests run in a network namespace of their own, where only a loopback interface exists, so
every server they start (uvicorn, PostgreSQL, Ray, whose GCS server listens on all interfaces) is
reachable on 127.0.0.1 and nowhere else.

``.ci/run`` starts the tests (and its PostgreSQL server) inside ``unshare --net``; a plain
``pytest`` run as root enters a new namespace itself at start (``tests/conftest.py``). Without
either, the Ray cases are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess

CLONE_NEWNET = 0x40000000
REASON = "the tests could not enter a network namespace of their own (needs root and unshare)"


def isolated() -> bool:
    """Is loopback the only network interface here?"""
    try:  # (not /sys/class/net: sysfs shows the namespace it was mounted in)
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


def isolate() -> bool:
    """Move this process (and whatever it starts from now on) to a new network namespace with
    its loopback up. False when that is not possible."""
    if isolated():
        return True
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return isolated()
