"""The host's only way into a sandbox's data directory: no-follow, regular files only, bounded.

Everything under the data directory was written by code the model wrote, so the host treats
it as hostile: a symlink to /etc/shadow, a FIFO that blocks a read forever, a directory 10,000
levels deep, a name with a newline and an ESC sequence in it. ``RunFiles`` opens each path
component relative to its parent's descriptor with ``O_NOFOLLOW`` (a symlink anywhere fails),
opens files with ``O_NONBLOCK`` and accepts only regular files, caps what it reads, and walks
iteratively with a bound on depth and entries. ``display_name`` quotes a name whenever it
holds anything but plain characters, so a name cannot pose as tool output.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harmony_agent.errors import HarmonyAgentError

__all__ = ["FileEntry", "RunFiles", "SandboxFileError", "Scan", "display_name"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PLAIN = frozenset("._-+=,@%/ ")
_KINDS = {
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
}


class SandboxFileError(HarmonyAgentError, ValueError):
    """A name that is not a regular file of the data directory, or one too large to read."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a data directory walk (links and special files are listed, not opened)."""

    name: str  # relative to the data directory, "/"-separated
    kind: str  # "file", "symlink", "fifo", "socket", "device"
    size: int
    mtime_ns: int


@dataclass
class Scan:
    """One bounded walk: what it saw and where it had to stop."""

    entries: list[FileEntry] = field(default_factory=list)
    total_bytes: int = 0
    count: int = 0  # files, directories and special files seen
    too_deep: bool = False  # a directory below max_depth was not entered
    too_many: bool = False  # the walk stopped at max_entries

    def files(self) -> dict[str, FileEntry]:
        return {e.name: e for e in self.entries}


def display_name(name: str) -> str:
    """``name`` as the model may see it: bare if plain, else quoted with escapes."""
    if name and all(c.isalnum() or c in _PLAIN for c in name) and name == name.strip():
        return name
    out = []
    for c in name:
        if "\udc80" <= c <= "\udcff":  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c in '"\\':
            out.append("\\" + c)
        elif unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class RunFiles:
    """Read a sandbox's data directory from the host without following anything it left there.

    Example::

        files = PythonTool.files_of(ctx)          # or RunFiles(run_files_dir / "python")
        files.read_text("growth.csv")             # a regular file, at most max_read_bytes
        [e.name for e in files.list()]            # regular files only

    Symlinks, FIFOs, sockets and devices are never opened; ``..`` and absolute names are
    refused. Blocking I/O: call it from a thread in async code (``anyio.to_thread.run_sync``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_read_bytes: int = 64 << 20,
        max_depth: int = 64,
        max_entries: int = 20_000,
    ) -> None:
        self.root = Path(root)
        self.max_read_bytes = max_read_bytes
        self.max_depth = max_depth
        self.max_entries = max_entries

    def __repr__(self) -> str:
        return f"RunFiles({str(self.root)!r})"

    # --- reading ----------------------------------------------------------------------------

    def _parts(self, name: str) -> list[str]:
        parts = [p for p in PurePosixPath(name).parts if p != "."]
        if not parts or name.startswith("/") or ".." in parts:
            raise SandboxFileError(
                f"{display_name(name)} is not a relative name inside the data directory "
                "(no absolute paths, no '..'); use a name from RunFiles.list()"
            )
        return parts

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise SandboxFileError(
                f"the data directory {self.root} cannot be opened as a real directory: "
                f"{exc.strerror}"
            ) from None

    def open_fd(self, name: str) -> int:
        """A read-only descriptor of the regular file ``name`` (the caller closes it)."""
        parts = self._parts(name)
        fd = self._open_root()
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise SandboxFileError(
                        f"{display_name(name)}: {display_name(part)} is not a directory of the "
                        f"data directory (symlinks are not followed): {exc.strerror}"
                    ) from None
                os.close(fd)
                fd = nxt
            try:
                file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise SandboxFileError(
                    f"{display_name(name)} cannot be opened (symlinks are not followed): "
                    f"{exc.strerror}"
                ) from None
        finally:
            os.close(fd)
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(file_fd)
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "directory")
            raise SandboxFileError(f"{display_name(name)} is a {kind}, not a regular file")
        return file_fd

    def read_bytes(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The content of the regular file ``name``; refuses files over ``max_bytes``."""
        cap = self.max_read_bytes if max_bytes is None else max_bytes
        fd = self.open_fd(name)
        try:
            size = os.fstat(fd).st_size
            if size > cap:
                raise SandboxFileError(
                    f"{display_name(name)} has {size} bytes, over the cap of {cap}; pass a "
                    "larger max_bytes to read it"
                )
            os.set_blocking(fd, True)
            chunks, left = [], cap + 1
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > cap:  # it grew while we read
            raise SandboxFileError(f"{display_name(name)} grew past the cap of {cap} bytes")
        return data

    def read_text(self, name: str, *, encoding: str = "utf-8", max_bytes: int | None = None) -> str:
        return self.read_bytes(name, max_bytes=max_bytes).decode(encoding)

    # --- walking ----------------------------------------------------------------------------

    def list(self) -> list[FileEntry]:
        """The regular files (bounded walk, symlinks not followed), sorted by name."""
        return sorted((e for e in self.scan().entries if e.kind == "file"), key=lambda e: e.name)

    def scan(self) -> Scan:
        """Walk iteratively with descriptors: no recursion, at most ``max_depth`` levels
        (so at most that many descriptors open) and ``max_entries`` entries."""
        result = Scan()
        try:
            root = os.open(self.root, _DIR_FLAGS)
        except OSError:
            return result
        stack: list[tuple[int, os._ScandirIterator[str], str]] = []
        try:
            stack.append((root, os.scandir(root), ""))
        except OSError:
            os.close(root)
            return result
        try:
            while stack:
                fd, it, prefix = stack[-1]
                entry = next(it, None)
                if entry is None:
                    it.close()
                    os.close(fd)
                    stack.pop()
                    continue
                result.count += 1
                if result.count > self.max_entries:
                    result.too_many = True
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                name = prefix + entry.name
                if stat.S_ISDIR(st.st_mode):
                    if len(stack) >= self.max_depth:
                        result.too_deep = True
                        continue
                    try:
                        sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue
                    try:
                        stack.append((sub, os.scandir(sub), name + "/"))
                    except OSError:
                        os.close(sub)
                    continue
                kind = "file" if stat.S_ISREG(st.st_mode) else _KINDS.get(stat.S_IFMT(st.st_mode))
                if kind is None:
                    continue
                size = st.st_size if kind == "file" else 0
                result.total_bytes += size
                result.entries.append(FileEntry(name, kind, size, st.st_mtime_ns))
        finally:
            for fd, it, _ in stack:
                it.close()
                os.close(fd)
        return result
