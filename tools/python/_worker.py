"""The sandboxed Python worker: a persistent namespace driven by JSON lines.

Runs inside the sandbox under the system interpreter, standard library only. Requests come
on the protocol input (one JSON object per line: ``{"id": ..., "code": ...}``), answers go
to the protocol output and carry the request's id. The cell runs in this process, so it can
reach both pipes: the host accepts only a well-formed reply with the id it just sent (a
random one per request, which a cell cannot guess ahead) and restarts the session on any
other line. The real stdin is /dev/null and fds 1/2 point at a capture file, so output
written below Python (``os.system``, C code) is caught too. Python-level output is kept in
bounded buffers (head and tail). Like a notebook cell, the value of a final expression is
returned as its ``repr``.
"""

import ast
import ctypes
import errno
import io
import json
import os
import resource
import signal
import sys
import traceback

MAIN_PID = os.getpid()
CONFIG = json.loads(os.environ.pop("HA_SANDBOX_CONFIG", "{}"))
LIMIT = int(CONFIG.get("max_output_chars", 20000))
CAPTURE = CONFIG.get("capture", "/tmp/.ha-capture")
DATA = CONFIG.get("data_dir", "/mnt/data")


class Bounded(io.TextIOBase):
    """Keeps the first and last LIMIT/2 characters and counts the rest."""

    def __init__(self):
        self.head = []
        self.head_len = 0
        self.tail = ""
        self.dropped = 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        half = LIMIT // 2
        room = half - self.head_len
        if room > 0:
            self.head.append(s[:room])
            self.head_len += min(len(s), room)
            s = s[room:]
        if s:
            combined = self.tail + s
            if len(combined) > half:
                self.dropped += len(combined) - half
                combined = combined[-half:]
            self.tail = combined
        return len(s)

    def text(self):
        head = "".join(self.head)
        if self.dropped:
            return f"{head}\n…[{self.dropped} characters cut]…\n{self.tail}"
        return head + self.tail


def limit(name, value):
    if value is None:
        return
    res = getattr(resource, name)
    try:
        resource.setrlimit(res, (value, value))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(res)
        resource.setrlimit(
            res, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard)
        )


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


# Denied outright: sockets (the network block when there is no network namespace), ptrace and
# other processes' memory, every way to a new namespace or mount (the new mount API too),
# io_uring (its requests bypass the socket and open rules), kernel keys, eBPF, modules.
DENY = (
    "socket",
    "socketpair",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "name_to_handle_at",
    "open_by_handle_at",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "personality",
    "quotactl",
)
# clone with any namespace flag is refused; clone3 passes its flags in memory a filter cannot
# read, so it fails with ENOSYS and the C library falls back to clone.
CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def load_seccomp(library):
    """Load the deny filter. Returns None when it is in force, else why not."""
    try:
        lib = ctypes.CDLL(library)  # no ld.so.cache in the sandbox: ask by soname
    except OSError as exc:
        return f"{library} cannot be loaded ({exc}); install libseccomp2"
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    if not ctx:
        return "seccomp_init failed"
    eperm = 0x00050000 | errno.EPERM  # SCMP_ACT_ERRNO(EPERM)
    rules = [(eperm, name, None) for name in DENY]
    rules.append((0x00050000 | errno.ENOSYS, "clone3", None))
    rules += [(eperm, "clone", ArgCmp(0, 7, flag, flag)) for flag in CLONE_NEW]  # MASKED_EQ
    for action, name, cmp in rules:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not a syscall of this architecture
        args = ctypes.byref(cmp) if cmp is not None else None
        rc = lib.seccomp_rule_add_array(ctx, action, nr, 1 if cmp is not None else 0, args)
        if rc != 0:
            return f"seccomp rule for {name} failed ({rc})"
    if lib.seccomp_load(ctx) != 0:
        return "seccomp_load failed"
    with open("/proc/self/status") as f:
        mode = next((line.split()[1] for line in f if line.startswith("Seccomp:")), "0")
    return None if mode == "2" else f"the kernel reports seccomp mode {mode}"


def not_dumpable():
    """No core dumps, and other processes of the uid cannot ptrace or read our memory."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def setup():
    limits = CONFIG.get("limits", {})
    limit("RLIMIT_CORE", 0)
    limit("RLIMIT_CPU", limits.get("cpu_s"))
    limit("RLIMIT_AS", limits.get("memory_bytes"))
    limit("RLIMIT_FSIZE", limits.get("file_bytes"))
    limit("RLIMIT_NOFILE", limits.get("open_files"))
    limit("RLIMIT_NPROC", limits.get("processes"))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails instead of killing
    not_dumpable()
    seccomp = load_seccomp(CONFIG.get("seccomp_library", "libseccomp.so.2"))
    proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    capture = os.open(CAPTURE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(capture, 1)
    os.dup2(capture, 2)
    sys.stdin = open(os.devnull, encoding="utf-8")
    return proto_in, proto_out, capture, seccomp


def read_capture(capture):
    size = os.lseek(capture, 0, os.SEEK_END)
    if size == 0:
        return ""
    with open(CAPTURE, "rb") as f:
        if size <= LIMIT:
            data = f.read().decode(errors="replace")
        else:
            half = LIMIT // 2
            head = f.read(half).decode(errors="replace")
            f.seek(size - half)
            data = f"{head}\n…[{size - 2 * half} bytes cut]…\n" + f.read().decode(errors="replace")
    os.ftruncate(capture, 0)
    os.lseek(capture, 0, os.SEEK_SET)
    return data


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(code, namespace):
    out, err = Bounded(), Bounded()
    result = error = None
    sys.stdout, sys.stderr = out, err
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the host interrupts long cells
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), namespace)
            if value is not None:
                text = repr(value)
                result = (
                    text
                    if len(text) <= LIMIT
                    else text[: LIMIT // 2] + f"…[{len(text) - LIMIT // 2} characters cut]"
                )
    except SystemExit as exc:
        error = f"SystemExit: {exc.code} (sys.exit() ends the cell, not the session)"
    except BaseException as exc:  # KeyboardInterrupt included: the host interrupts long cells
        if os.getpid() != MAIN_PID:
            os._exit(1)
        # drop the worker's own frames: the model only needs its cell's
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        error = "".join(traceback.format_exception(type(exc), exc, tb))
        if len(error) > LIMIT:
            error = error[: LIMIT // 4] + "\n…\n" + error[-(LIMIT // 2) :]
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if os.getpid() != MAIN_PID:  # a fork of the user's code must never answer
        os._exit(0)
    return out.text(), err.text(), result, error


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proto_in, proto_out, capture, seccomp = setup()
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    proto_out.write(json.dumps({"ready": True, "seccomp_error": seccomp}) + "\n")
    proto_out.flush()
    for line in proto_in:
        if os.getpid() != MAIN_PID:
            os._exit(0)
        request = json.loads(line)
        stdout, stderr, result, error = run(request["code"], namespace)
        reap()
        if os.path.isdir(DATA):
            os.chdir(DATA)  # a cell that changed directory does not move the next one
        fd_output = read_capture(capture)
        answer = {
            "id": request["id"],  # the host drops a reply whose id is not the one it sent
            "stdout": stdout,
            "stderr": stderr,
            "fd_output": fd_output,
            "result": result,
            "error": error,
        }
        proto_out.write(json.dumps(answer) + "\n")
        proto_out.flush()


if __name__ == "__main__":
    main()
