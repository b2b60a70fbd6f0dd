"""The process that runs one candidate program inside the sandbox (standard library only).

It is started as `python -I -S -c <this file's source> <settings JSON>`, so it needs no file
the sandbox user could not read. As root inside fresh namespaces it first builds a new root
of the system folders only (read-only, nosuid, nodev), with a private size-limited tmpfs /tmp
holding the working folder, chroots into it, sets the resource limits and no-new-privileges,
and drops to the sandbox user; only then does it load the candidate's source. After that it serves calls: the judge (outside the sandbox) sends
arguments, the worker calls the entry point and sends back the return value.

What comes back is never trusted: values are plain data (exact built-in types only, so an
object whose `==` is always true is refused here and could not be rebuilt outside anyway),
and the judge compares them with the expected values itself. The candidate can write to the
reply pipe too; all it can forge that way is a return value.
"""
from __future__ import annotations

import base64
import json
import os
import sys

PLAIN_SCALARS = (bool, int, float, str, bytes, type(None))
MAX_DEPTH = 64


class NotPlainData(TypeError):
    """A value that is not plain data: numbers, strings, bytes, booleans, None, and
    lists, tuples, dicts, sets and frozensets of them."""


def encode(value, depth: int = 0):
    """Plain data -> JSON-able tagged form; anything else raises NotPlainData.

    Exact type checks (`type(x) is int`, never isinstance) so subclasses with their own
    `__eq__`, `__hash__` or `__repr__` are refused."""
    if depth > MAX_DEPTH:
        raise NotPlainData(f"nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if value is None:
        return ["none"]
    if kind is bool:
        return ["bool", value]
    if kind is int:
        return ["int", format(value, "x")]  # hex: no int<->str digit limit, exact for big ints
    if kind is float:
        return ["float", value.hex()]  # exact, and carries inf and nan
    if kind is str:
        return ["str", value]
    if kind is bytes:
        return ["bytes", base64.b64encode(value).decode("ascii")]
    if kind in (list, tuple, set, frozenset):
        return [kind.__name__, [encode(v, depth + 1) for v in value]]
    if kind is dict:
        return ["dict", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    raise NotPlainData(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


MAX_ELEMENTS = 1_000_000
MAX_SAME_HASH = 8


def decode(form, depth: int = 0, budget: list[int] | None = None):
    """The tagged form -> fresh built-in objects; a malformed form raises ValueError.

    What comes back from a candidate is hostile input: at most MAX_ELEMENTS values, and a set or
    dict whose keys share hashes (crafted ints all hashing alike make building it quadratic, in C,
    holding the interpreter lock) is refused before it is built."""
    budget = [MAX_ELEMENTS] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"a value with more than {MAX_ELEMENTS} elements")
    if depth > MAX_DEPTH or not isinstance(form, list) or not form or not isinstance(form[0], str):
        raise ValueError("malformed plain-data value")
    tag, rest = form[0], form[1:]
    if tag == "none" and not rest:
        return None
    if len(rest) != 1:
        raise ValueError(f"malformed plain-data value tagged {tag!r}")
    body = rest[0]
    if tag == "bool" and type(body) is bool:
        return body
    if tag == "int" and type(body) is str:
        return int(body, 16)
    if tag == "float" and type(body) is str:
        try:
            return float.fromhex(body)
        except OverflowError:
            raise ValueError("a float out of range") from None
    if tag == "str" and type(body) is str:
        return body
    if tag == "bytes" and type(body) is str:
        return base64.b64decode(body, validate=True)
    if tag in ("list", "tuple", "set", "frozenset") and type(body) is list:
        items = [decode(v, depth + 1, budget) for v in body]
        if tag in ("set", "frozenset"):
            _refuse_hash_flood(items)
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict" and type(body) is list:
        pairs = [(decode(k, depth + 1, budget), decode(v, depth + 1, budget)) for k, v in (_pair(p) for p in body)]
        _refuse_hash_flood([k for k, _ in pairs])
        return dict(pairs)
    raise ValueError(f"malformed plain-data value tagged {tag!r}")


def _refuse_hash_flood(keys: list) -> None:
    seen: dict[int, int] = {}
    for key in keys:
        try:
            h = hash(key)
        except TypeError:
            raise ValueError(f"an unhashable {type(key).__name__} as a set member or dict key") from None
        seen[h] = seen.get(h, 0) + 1
        if seen[h] > MAX_SAME_HASH:
            raise ValueError("set or dict keys crafted to share one hash")


def _pair(p):
    if type(p) is not list or len(p) != 2:
        raise ValueError("malformed plain-data dict entry")
    return p


# ----------------------------------------------------------------------------- isolation set-up

AT_FDCWD, AT_RECURSIVE, SYS_MOUNT_SETATTR = -100, 0x8000, 442
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
PR_SET_NO_NEW_PRIVS = 38
NEW_ROOT = "/tmp/.ttc-root"
DEVICES = ("null", "zero", "random", "urandom")


def _check(result: int, what: str, ctypes) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _lock_down(libc, ctypes, path: str, attr_set: int, attr_clr: int = 0, recursive: bool = True) -> None:
    """Set mount attributes on `path` (and every mount below it): mount_setattr (Linux 5.12+), else
    one remount per mount point."""

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    if os.uname().machine in ("x86_64", "aarch64"):  # the syscall number is the same on both
        if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
            return
    ms = ((MS_RDONLY if attr_set & MOUNT_ATTR_RDONLY else 0) | (MS_NOSUID if attr_set & MOUNT_ATTR_NOSUID else 0)
          | (MS_NODEV if attr_set & MOUNT_ATTR_NODEV else 0))
    with open("/proc/self/mountinfo") as f:
        points = sorted({line.split()[4] for line in f}, key=len)
    for point in points:
        if point == path or (recursive and point.startswith(path.rstrip("/") + "/")):
            _check(libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | ms, None), f"remount {point}", ctypes)


def _new_root(settings: dict) -> None:
    """A root holding only the system folders (read-only, no setuid, no devices), four device nodes,
    a fresh /proc and a private writable /tmp; then chroot into it. The host's other files (datasets,
    checkpoints, the project, sockets under /run or /dev/shm) are simply not there."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mount = lambda src, dst, kind, flags, data=None: _check(  # noqa: E731
        libc.mount(src and src.encode(), dst.encode(), kind and kind.encode(), flags, data and data.encode()),
        f"mount {dst}", ctypes)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")  # hides the host's /tmp here
    os.mkdir(NEW_ROOT)
    mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for name, target in settings["root_links"].items():
        os.symlink(target, NEW_ROOT + "/" + name)
    for folder in settings["root_binds"]:
        inside = NEW_ROOT + folder
        os.makedirs(inside, exist_ok=True)
        mount(folder, inside, None, MS_BIND | MS_REC)
    for name in ("tmp", "proc", "dev"):
        os.makedirs(NEW_ROOT + "/" + name, exist_ok=True)
    for device in DEVICES:
        open(f"{NEW_ROOT}/dev/{device}", "w").close()
        mount(f"/dev/{device}", f"{NEW_ROOT}/dev/{device}", None, MS_BIND)
    _lock_down(libc, ctypes, NEW_ROOT, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    for device in DEVICES:  # the device nodes must stay usable (reading /dev/urandom, writing /dev/null)
        _lock_down(libc, ctypes, f"{NEW_ROOT}/dev/{device}", MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, recursive=False)
    mount("tmpfs", NEW_ROOT + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={settings['tmpfs_bytes']},mode=1777")
    mount("proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chroot(NEW_ROOT)
    os.mkdir(settings["workdir"], 0o700)


def _isolate(settings: dict) -> None:
    import resource

    if settings["namespaces"]:
        _new_root(settings)
    if settings.get("uid") is not None and os.getuid() == 0:
        os.chown(settings["workdir"], settings["uid"], settings["gid"])
    os.chdir(settings["workdir"])
    for name, value in settings["limits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    try:  # no setuid program can give privileges back (Linux; best effort elsewhere)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if settings.get("uid") is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(settings["gid"])
        os.setuid(settings["uid"])
        if os.getuid() != settings["uid"] or os.geteuid() != settings["uid"]:
            raise OSError("could not drop privileges")


# ----------------------------------------------------------------------------- serving calls

def main() -> None:
    settings = json.loads(sys.argv[1])
    requests = os.fdopen(settings["request_fd"], "rb", buffering=0)
    reply_fd = settings["reply_fd"]
    write, dumps = os.write, json.dumps  # held here: the candidate may replace the module attributes

    def reply(message: dict) -> None:
        data = (dumps(message) + "\n").encode()
        while data:
            data = data[write(reply_fd, data):]

    try:
        _isolate(settings)
    except BaseException as exc:  # noqa: BLE001 - any failure here is the sandbox's, reported as such
        reply({"setup_error": f"{type(exc).__name__}: {exc}"})
        return
    reply({"ready": True})

    buffer = b""

    def next_request():
        nonlocal buffer
        while b"\n" not in buffer:
            chunk = requests.read(65536)
            if not chunk:
                return None
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        return json.loads(line)

    load = next_request()
    if load is None:
        return
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compile(load["source"], "solution.py", "exec"), namespace)  # noqa: S102 - this is the sandbox
        function = namespace[load["entry_point"]]
        if not callable(function):
            raise TypeError(f"{load['entry_point']} is not a function")
    except KeyError:
        reply({"load_error": "NameError", "message": f"the solution defines no {load['entry_point']!r}"})
        return
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: they are the candidate's
        reply({"load_error": type(exc).__name__, "message": str(exc)[:500]})
        return
    reply({"loaded": True})
    while True:
        request = next_request()
        if request is None:
            return
        try:
            args = decode(request["args"])
            kwargs = decode(request["kwargs"])
            value = function(*args, **kwargs)
            encoded = encode(value)
        except NotPlainData as exc:
            reply({"refused": str(exc)[:500]})
            continue
        except BaseException as exc:  # noqa: BLE001 - the candidate raised (SystemExit included): a failed call
            reply({"raised": type(exc).__name__, "message": str(exc)[:500]})
            continue
        reply({"value": encoded})


if __name__ == "__main__":
    main()
