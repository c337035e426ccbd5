"""Unprivileged uids for sandbox sessions, unique across every host process on the machine.

RLIMIT_NPROC counts per uid, and two sessions with one uid can read each other's memory,
files and signals, so each session leases its own uid. A lease is an exclusive ``flock`` on
``<lock dir>/<uid>`` held for the session's life: the kernel drops it when the holder exits,
so a crashed host frees its uids. A uid that still owns a process (a leftover of a crashed
host) is skipped. The lock directory is root's own and mode 0700, checked without following
links. Only a root host can lease (it needs ``setuid``).
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import stat
import tempfile
from pathlib import Path

from harmony_agent.errors import ConfigurationError

__all__ = ["UidLease", "kill_uid", "pids_of_uid"]

BASE_UID = 210_000
COUNT = 50_000


def _lock_dir() -> Path:
    for parent in (Path("/run"), Path(tempfile.gettempdir())):
        path = parent / "harmony-agent-uids"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return path
    raise ConfigurationError(
        "no safe directory for sandbox uid leases (/run/harmony-agent-uids or "
        f"{tempfile.gettempdir()}/harmony-agent-uids must be a directory owned by root with "
        "mode 0700; remove whatever is there)"
    )


def _uids_in_use() -> set[int]:
    used = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                used.add(os.stat(f"/proc/{entry.name}").st_uid)
            except OSError:
                pass
    return used


def pids_of_uid(uid: int) -> list[int]:
    """Live processes with ``uid`` as a real, effective or saved uid (zombies left for an
    init that reaps late are not counted: they hold nothing and run nothing)."""
    pids, want = [], str(uid).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry.name}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            status = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        at = status.find(b"\nUid:")
        state = status.find(b"\nState:")
        if at < 0 or state < 0 or status[state + 8 : state + 9] in (b"Z", b"X"):
            continue
        if want in status[at + 5 : status.find(b"\n", at + 1)].split():
            pids.append(int(entry.name))
    return pids


def kill_uid(uid: int, rounds: int = 50) -> None:
    """SIGKILL every process of ``uid`` until none is left (a forking one included)."""
    for _ in range(rounds):
        pids = pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class UidLease:
    """An exclusive uid until :meth:`release` (or until this process exits)."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise ConfigurationError("only a root host can give sandboxes their own uid")
        directory = _lock_dir()
        used = _uids_in_use()
        start = random.randrange(COUNT)
        for i in range(COUNT):
            uid = BASE_UID + (start + i) % COUNT
            if uid in used:
                continue
            fd = os.open(
                directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if pids_of_uid(uid):  # started after our scan by a host that crashed since
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise ConfigurationError(f"all {COUNT} sandbox uids from {BASE_UID} are in use")

    def release(self) -> None:
        """Kill what is left of the uid, then free it."""
        if self._fd is None:
            return
        kill_uid(self.uid)
        os.close(self._fd)
        self._fd = None
