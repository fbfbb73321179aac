"""The harness's confinement: namespaces, chroot, a fresh uid, no capabilities, a seccomp filter,
and the in-process guards (imports, files, fork). Standard library only: the harness loads it by
path in a child that has neither promptlab nor site-packages on sys.path."""

from __future__ import annotations

import builtins
import ctypes
import errno
import io
import os
import resource
import struct
import sys


class SandboxViolation(PermissionError):
    sandbox_violation = True


class ForbiddenImport(ImportError):
    sandbox_violation = True


# --------------------------------------------------------------------------- confinement


def confine(cfg: dict, role: str) -> list[str]:
    """Put this process in its sandbox; returns the protections that applied.

    As root: a new network namespace, then chroot and a drop to the role's
    fresh uid.  Not root: a user namespace gives the same network namespace and
    chroot, then every capability is dropped.  Order matters: namespaces and
    pre-imports need the host's filesystem, chroot needs privilege, and the
    seccomp filter forbids what came before it.
    """
    protections = []
    uid = cfg["uids"][role] if cfg["uids"] else None
    in_userns = False
    if uid is not None:
        if _unshare(0x40000000):                            # CLONE_NEWNET
            protections.append("netns")
    else:
        own = os.getuid(), os.getgid()                      # they read as "overflow" once unshared
        if _unshare(0x10000000 | 0x00020000 | 0x40000000):  # CLONE_NEWUSER | NEWNS | NEWNET
            protections.append("netns")
            in_userns = _map_ids(*own)
    import socket, _socket  # noqa: F401,E401  -- the guards patch them; out of reach after the chroot
    for name in cfg["preimport"]:
        try:
            __import__(name)
        except BaseException:
            pass
    mem = cfg["memory_mb"] * 1024 * 1024
    limits = [("RLIMIT_CPU", cfg["cpu_s"], cfg["cpu_s"] + 1), ("RLIMIT_AS", mem, mem),
              ("RLIMIT_DATA", mem, mem), ("RLIMIT_FSIZE", cfg["fsize"], cfg["fsize"]),
              ("RLIMIT_NOFILE", 64, 64), ("RLIMIT_CORE", 0, 0)]
    if uid is not None:
        limits.append(("RLIMIT_NPROC", cfg["nproc"], cfg["nproc"]))
    for name, soft, hard in limits:           # hard = soft: they cannot be raised again
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
            protections.append(name)
        except (ValueError, OSError, AttributeError):
            pass
    if uid is not None or in_userns:
        os.chroot(cfg["jail"])                # nothing of the host's filesystem is left in view
        cfg["work"] = "/work"
        protections.append("chroot")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)           # a non-root uid cannot leave a chroot
        protections.append("uid")
    elif in_userns and _drop_capabilities():  # nor can a process without capabilities
        protections.append("nocaps")
    os.chdir(cfg["work"])
    os.environ["HOME"] = os.environ["TMPDIR"] = cfg["work"]
    sys.path[:] = [p for p in sys.path if p]  # never import from the cwd
    if _seccomp():
        protections.append("seccomp")
    return protections


def libc():
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
    try:
        return libc().unshare(flags) == 0
    except Exception:
        return False


def _map_ids(uid: int, gid: int) -> bool:
    """In a fresh user namespace: map our own uid and gid (the only ones we may) to themselves."""
    try:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
        return True
    except OSError:
        return False


def _drop_capabilities() -> bool:
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)      # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()                      # effective, permitted, inheritable: none
    try:
        return libc().capset(header, data) == 0
    except Exception:
        return False


# x86_64 syscall numbers refused with EPERM: sockets of any family (so AF_UNIX
# too); reaching into other processes (ptrace, process_vm_*, pidfd_getfd) or
# signalling them (kill, tkill, tgkill, rt_(tg)sigqueueinfo, pidfd_send_signal);
# io_uring (it can connect without a socket() call); namespaces, mounts and
# chroot; kernel facilities a sandbox never needs (bpf, perf, userfaultfd, keys).
_DENIED_X86_64 = (41, 101, 310, 311, 438, 62, 200, 234, 129, 297, 424, 425, 426, 427,
                  272, 308, 165, 166, 155, 161, 428, 429, 430, 431, 432, 433, 442,
                  321, 298, 323, 250, 248, 249)
_CLONE_X86_64, _CLONE3_X86_64 = 56, 435
_CLONE_NAMESPACES = 0x7E020000             # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def _seccomp() -> bool:
    """Install a seccomp filter (x86_64 only); False where that is not possible."""
    if os.uname().machine != "x86_64":
        return False
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    prog: list = [(ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, kill),   # arch must be x86_64
                  (ld, 0, 0, 0), (jge, "eperm", 0, 0x40000000)]                # no x32 syscalls
    prog += [(jeq, "eperm", 0, nr) for nr in _DENIED_X86_64]
    prog += [(jeq, "enosys", 0, _CLONE3_X86_64),     # its flags are out of reach; libc falls back to clone
             (jeq, "clone", 0, _CLONE_X86_64), (ret, 0, 0, allow)]
    labels = {"clone": len(prog)}
    prog += [(ld, 0, 0, 16), (jset, "eperm", 0, _CLONE_NAMESPACES), (ret, 0, 0, allow)]
    labels["eperm"] = len(prog)
    prog.append((ret, 0, 0, eperm))
    labels["enosys"] = len(prog)
    prog.append((ret, 0, 0, enosys))
    code = b"".join(struct.pack("HBBI", op, *(labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)), k)
                    for i, (op, jt, jf, k) in enumerate(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    fprog = SockFprog(len(prog), code)
    c = libc()
    if c.prctl(38, 1, 0, 0, 0) != 0:               # PR_SET_NO_NEW_PRIVS
        return False
    return c.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0   # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def install_guards(cfg: dict) -> None:
    """Python-level guards: legible ``forbidden`` results, not a security boundary."""
    import socket
    import _socket
    work = os.path.realpath(cfg["work"])

    allowed = None if cfg["allowed"] is None else frozenset(cfg["allowed"])
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = globals.get("__name__") if isinstance(globals, dict) else None
        from_sandbox = importer is None or importer == "__sandbox__" or importer not in sys.modules
        if from_sandbox:
            if level:
                raise ForbiddenImport("relative imports are not allowed in the sandbox")
            if allowed is not None and name.partition(".")[0] not in allowed:
                raise ForbiddenImport(f"import of module '{name}' is not allowed in the sandbox")
        return real_import(name, globals, locals, fromlist, level)
    builtins.__import__ = guarded_import

    def no_network(*a, **k):
        raise SandboxViolation("network access is disabled in the sandbox")

    class NoSocket(_socket.socket):
        def __init__(self, *a, **k):
            no_network()
    for mod in (socket, _socket):
        for attr in ("socket", "SocketType"):
            setattr(mod, attr, NoSocket)
        for attr in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
                     "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "dup"):
            if hasattr(mod, attr):
                setattr(mod, attr, no_network)

    real_open = builtins.open
    prefix = work.rstrip(os.sep) + os.sep

    def check(path, what):
        if isinstance(path, int):
            return
        p = os.path.realpath(os.fsdecode(path))
        if p != work and not p.startswith(prefix):
            raise SandboxViolation(f"{what} of '{os.fsdecode(path)}' is outside the sandbox directory")

    def guarded_open(file, mode="r", *a, **k):
        check(file, "open")
        return real_open(file, mode, *a, **k)
    builtins.open = io.open = guarded_open

    class GuardedFileIO(io.FileIO):
        def __init__(self, file, *a, **k):
            check(file, "open")
            super().__init__(file, *a, **k)
    io.FileIO = GuardedFileIO

    def path_guard(fn, *argnames):
        def wrapper(*a, **k):
            for i, name in enumerate(argnames):
                if i < len(a):
                    check(a[i], fn.__name__)
                elif name in k:
                    check(k[name], fn.__name__)
            return fn(*a, **k)
        wrapper.__name__ = fn.__name__
        return wrapper
    one = {"open": "path", "remove": "path", "unlink": "path", "rmdir": "path", "mkdir": "path",
           "makedirs": "name", "removedirs": "name", "chmod": "path", "chown": "path",
           "lchown": "path", "truncate": "path", "utime": "path", "mkfifo": "path",
           "mknod": "path", "listdir": "path", "scandir": "path", "chdir": "path"}
    two = {"rename": ("src", "dst"), "replace": ("src", "dst"), "renames": ("old", "new"),
           "link": ("src", "dst"), "symlink": ("src", "dst")}
    for name, arg in one.items():
        if hasattr(os, name):
            setattr(os, name, path_guard(getattr(os, name), arg))
    for name, args in two.items():
        if hasattr(os, name):
            setattr(os, name, path_guard(getattr(os, name), *args))

    def no_process(*a, **k):
        raise SandboxViolation("starting processes is disabled in the sandbox")
    for name in dir(os):
        if name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill",
                    "killpg") or name.startswith(("exec", "spawn")):
            setattr(os, name, no_process)


