"""How a sandbox session's worker is laid out and confined: its resource limits, what the
worker is told (config and environment), and bwrap's options for the bubblewrap mode.

Pure data and argument building (plus the one-time probes of the host's bwrap); the session
(``_session``) starts the worker with them and owns its processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEFAULT_LIMITS",
    "INSIDE_WORKER",
    "Layout",
    "Limits",
    "Mode",
    "bubblewrap_available",
    "bwrap_disables_userns",
    "data_path",
]

Mode = Literal["bubblewrap", "process"]
INSIDE_WORKER = "/opt/harmony-agent/worker.py"
SECCOMP_LIBRARY = "libseccomp.so.2"


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a sandbox session."""

    cpu_s: int = 600  # CPU seconds over the session's life (a backstop; the wall clock rules)
    memory_bytes: int = 2 << 30  # address space, with MALLOC_ARENA_MAX=2
    file_bytes: int = 64 << 20  # largest file the code may write
    open_files: int = 256
    processes: int = 64  # processes and threads of the session's uid
    data_quota_bytes: int = 512 << 20  # everything under /mnt/data
    data_entries: int = 20_000  # files and directories under /mnt/data
    data_depth: int = 64  # directory levels under /mnt/data
    tmp_bytes: int = 128 << 20  # size of /tmp, and again of /dev/shm (bubblewrap mode)


DEFAULT_LIMITS = Limits()

_BWRAP_OK: bool | None = None
_BWRAP_DISABLE_USERNS: bool | None = None


def bubblewrap_available() -> bool:
    """Whether bwrap can create its namespaces here (checked once per process)."""
    global _BWRAP_OK
    if _BWRAP_OK is None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            _BWRAP_OK = False
        else:
            probe = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
            probe += ["--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib"]
            probe += ["--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev"]
            try:
                _BWRAP_OK = (
                    subprocess.run([*probe, "/usr/bin/true"], capture_output=True, timeout=10)
                ).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _BWRAP_OK = False
    return _BWRAP_OK


def bwrap_disables_userns() -> bool:
    """Whether this bwrap has ``--disable-userns`` (0.8 and later)."""
    global _BWRAP_DISABLE_USERNS
    if _BWRAP_DISABLE_USERNS is None:
        try:
            out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
            _BWRAP_DISABLE_USERNS = "--disable-userns" in out.stdout + out.stderr
        except (OSError, subprocess.TimeoutExpired):
            _BWRAP_DISABLE_USERNS = False
    return _BWRAP_DISABLE_USERNS


def data_path(mode: Mode, data_dir: Path) -> str:
    """The data directory as the code sees it."""
    return "/mnt/data" if mode == "bubblewrap" else str(data_dir)


@dataclass(frozen=True, slots=True)
class Layout:
    """One start of a session's worker: where it sees things and how it is confined."""

    mode: Mode
    data_dir: Path
    python: str
    limits: Limits
    max_output_chars: int
    #: process mode: the private directory whose ``w`` the worker writes (None in bubblewrap)
    private: Path | None
    #: whether the worker runs under a uid of its own (then the process limit applies to it)
    own_uid: bool

    def config(self) -> dict[str, Any]:
        """What the worker reads from ``HA_SANDBOX_CONFIG``."""
        assert self.mode == "bubblewrap" or self.private is not None
        capture = "/tmp/.ha-capture" if self.mode == "bubblewrap" else f"{self.private}/w/capture"
        lim = self.limits
        return {
            "max_output_chars": self.max_output_chars,
            "capture": capture,
            "data_dir": data_path(self.mode, self.data_dir),
            "seccomp_library": SECCOMP_LIBRARY,
            "limits": {
                "cpu_s": lim.cpu_s,
                "memory_bytes": lim.memory_bytes,
                "file_bytes": lim.file_bytes,
                "open_files": lim.open_files,
                "processes": lim.processes if self.own_uid else None,
            },
        }

    def env(self) -> dict[str, str]:
        """The worker's whole environment (nothing of the host's)."""
        tmp = "/tmp" if self.mode == "bubblewrap" else f"{self.private}/w"
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": data_path(self.mode, self.data_dir),
            "LANG": "C.UTF-8",
            "TMPDIR": tmp,
            "MALLOC_ARENA_MAX": "2",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HA_SANDBOX_CONFIG": json.dumps(self.config()),
        }

    def bwrap_args(self, worker_fd: int) -> list[str]:
        """bwrap's options. They go in through a pipe (``--args``), so the sandbox's
        /proc/1/cmdline shows no host path and no configuration."""
        tmp = str(self.limits.tmp_bytes)
        args = ["--unshare-all", "--die-with-parent", "--new-session"]
        if bwrap_disables_userns():
            args += ["--unshare-user", "--disable-userns"]
        args += ["--ro-bind", "/usr", "/usr"]
        for link in ("lib", "lib64", "bin", "sbin"):
            args += ["--symlink", f"usr/{link}", f"/{link}"]
        args += ["--proc", "/proc", "--dev", "/dev", "--size", tmp, "--tmpfs", "/dev/shm"]
        args += ["--size", tmp, "--tmpfs", "/tmp", "--dir", "/mnt"]
        args += ["--bind", str(self.data_dir), "/mnt/data"]
        # the worker goes in as a file descriptor opened by the host: the sandbox's uid
        # need not be able to reach the package's path
        args += ["--ro-bind-data", str(worker_fd), INSIDE_WORKER]
        if not self.python.startswith("/usr/"):
            prefix = str(Path(self.python).resolve().parent.parent)
            args += ["--ro-bind", prefix, prefix]
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/mnt/data"]
        args.append("--clearenv")
        for key, value in self.env().items():
            args += ["--setenv", key, value]
        return args
