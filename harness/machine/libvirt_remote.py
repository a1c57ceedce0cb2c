"""Remote libvirt hosts: which URIs are remote, how their guests' SSH is reached, and where
their files live.

A remote host (a URI with a hostname, e.g. ``qemu+ssh://root@lab1/system``) cannot see this
host's files, so everything a domain reads or writes lives in one libvirt storage pool on
that host (``sysext-harness``, a directory pool at ``/var/lib/sysext-harness/pool``):

- **images** (base disks, kernels, initramfs, fw_cfg files, seeds) are uploaded once over
  the libvirt connection (sparse) into volumes named by their content digest and reused by
  later runs; a marker volume says the upload finished;
- **run volumes** (disk overlays, saved states, UEFI variable stores) carry the owning
  harness process in their names and are removed when the run ends, or by the next run
  once that process is gone.

The Machine works with local paths (it renames a snapshot's disk, removes a workdir), so
each run volume has a small **placeholder** file at the local path naming the URI and the
remote path. A placeholder's second hard link in a registry lets the store notice when
the Machine has removed it, and delete the volume then.

The guest's SSH port is forwarded on the remote host's loopback; over ``qemu+ssh`` the
harness reaches it with ``ssh -W`` through the same SSH login libvirt uses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import shlex
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from harness.errors import ConfigError, MachineError
from harness.paths import cache_dir

log = logging.getLogger(__name__)

POOL_NAME = "sysext-harness"
POOL_PATH = "/var/lib/sysext-harness/pool"
PLACEHOLDER_MAGIC = b"sysext-harness remote file v1\n"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
IMAGE_PREFIX = "img_"
RUN_PREFIX = "run_"
DONE_SUFFIX = ".done"
_RUN_NUMBERS = itertools.count(1)  # itertools.count is atomic under the GIL
# libvirt refuses to refresh a pool while any volume of it is being uploaded or downloaded
# ("has asynchronous jobs running"): another worker's upload of a 1-2 GB image lasts this long
# at most before we give up and report it.
POOL_BUSY_TIMEOUT_S = 600.0
POOL_BUSY_MARK = "asynchronous jobs running"


# ----- URIs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostUri:
    """What the harness needs to know of a libvirt URI."""

    uri: str
    transport: str  # "" for the default (a local socket, or TLS to a host)
    host: str  # "" for a local URI
    port: int | None
    user: str | None
    params: dict[str, str]

    @classmethod
    def parse(cls, uri: str) -> HostUri:
        parts = urlsplit(uri)
        driver, _, transport = parts.scheme.partition("+")
        if not driver:
            raise ConfigError("not a libvirt URI (expected e.g. qemu:///system or "
                              "qemu+ssh://user@host/system)", key="--libvirt-uri", value=uri)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"bad port: {exc}", key="--libvirt-uri", value=uri) from exc
        return cls(uri, transport, parts.hostname or "", port, parts.username, params)

    @property
    def remote(self) -> bool:
        """True when the host's files are not ours: anything with a hostname."""
        return bool(self.host)

    @property
    def over_ssh(self) -> bool:
        return self.transport in SSH_TRANSPORTS

    def check_reachable_guests(self) -> None:
        """Guests forward their SSH port on the host's loopback: a remote host must be
        reached over SSH (which can forward to it), unless it is this host."""
        if self.remote and not self.over_ssh and self.host not in LOOPBACK_HOSTS:
            raise ConfigError(
                "remote libvirt hosts must be reached over SSH: guests forward their SSH "
                "port on the host's loopback, which the harness reaches through the same "
                "SSH login (use qemu+ssh://user@host/system)",
                key="--libvirt-uri", value=self.uri)

    def ssh_command(self, target_port: int) -> list[str]:
        """`ssh -W` to `127.0.0.1:target_port` on the host, logged in as libvirt is (the
        URI's user, port and `keyfile`; `no_verify=1` skips the host key check as libvirt
        does)."""
        cmd = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.user:
            cmd += ["-l", self.user]
        if "keyfile" in self.params:
            cmd += ["-i", self.params["keyfile"], "-o", "IdentitiesOnly=yes"]
        if self.params.get("no_verify") == "1":
            cmd += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR"]
        elif "known_hosts" in self.params:
            cmd += ["-o", f"UserKnownHostsFile={self.params['known_hosts']}"]
        return [*cmd, "-W", f"127.0.0.1:{target_port}", self.host]

    def ssh_proxy(self, target_port: int) -> str | None:
        """The ProxyCommand that reaches a guest's forwarded port, or None (direct)."""
        return shlex.join(self.ssh_command(target_port)) if self.over_ssh else None


# ----- placeholders -------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """A file on a libvirt host, as its local placeholder records it."""

    uri: str
    path: str
    format: str  # "qcow2", "raw" or "save" (a saved domain state)
    capacity: int  # the disk's virtual size in bytes (0: not a disk)

    def write_placeholder(self, local: Path) -> None:
        local.write_bytes(PLACEHOLDER_MAGIC + json.dumps(self.__dict__).encode() + b"\n")


def read_placeholder(local: Path) -> RemoteFile | None:
    """The remote file a placeholder stands for, or None when `local` is a real file."""
    try:
        with local.open("rb") as f:
            if f.read(len(PLACEHOLDER_MAGIC)) != PLACEHOLDER_MAGIC:
                return None
            fields = json.loads(f.read(4096))
    except (OSError, ValueError):
        return None
    return RemoteFile(**fields)


def disk_capacity(path: Path, fmt: str) -> int:
    """The virtual size of a local disk image: the file's size for raw, the header's
    size field for qcow2."""
    if fmt != "qcow2":
        return path.stat().st_size
    with path.open("rb") as f:
        header = f.read(32)
    if header[:4] != b"QFI\xfb":
        raise MachineError(f"{path}: not a qcow2 image")
    return int(struct.unpack(">Q", header[24:32])[0])


# ----- names ----------------------------------------------------------------------------------
def content_digest(path: Path) -> str:
    """SHA-256 of a file's data extents and its size: a sparse 2 GB disk with 300 MB of
    data reads 300 MB. Two copies with different holes get different digests, which only
    costs an upload."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(f"size={size}\n".encode())
    with path.open("rb") as f:
        fd = f.fileno()
        for start, length in data_extents(fd, size):
            h.update(f"@{start}\n".encode())
            os.lseek(fd, start, os.SEEK_SET)
            left = length
            while left:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each data extent of an open file, by SEEK_DATA/SEEK_HOLE."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole up to the end
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        offset = end


_digests: dict[tuple[int, int, int, int], str] = {}


def cached_digest(path: Path) -> str:
    """`content_digest`, remembered per process by inode, size and mtime."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = content_digest(path)
    return _digests[key]


def image_volume_name(path: Path) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in path.name)[-60:]
    return f"{IMAGE_PREFIX}{cached_digest(path)[:24]}_{safe}"


@dataclass(frozen=True)
class RunVolumeName:
    """`run_<host>_<pid>_<start>_<n>_<label>`: whose volume it is, readable by a sweep."""

    host: str
    pid: int
    start: str
    label: str

    @classmethod
    def parse(cls, name: str) -> RunVolumeName | None:
        parts = name.split("_", 5)
        if len(parts) != 6 or parts[0] + "_" != RUN_PREFIX or not parts[2].isdigit():
            return None
        return cls(parts[1], int(parts[2]), parts[3], parts[5])


# ----- the store on one host --------------------------------------------------------------------
class HostStore:
    """The storage pool of one libvirt host: content-addressed images and this run's
    volumes. `conn` returns the (live) connection; `owner` is this harness process."""

    def __init__(self, uri: str, conn: Callable[[], Any], owner: Any,
                 libvirt: Any) -> None:
        self.uri = uri
        self._conn = conn
        self.owner = owner
        self.lv = libvirt
        self._pool: Any = None
        self._registries: set[Path] = set()
        self._uploaded: set[str] = set()  # image volumes known to be complete on the host
        self.prefix = f"{RUN_PREFIX}{owner.host}_{owner.pid}_{owner.start}_"

    # -- the pool --
    @property
    def pool(self) -> Any:
        if self._pool is None:
            self._pool = self._ensure_pool()
        return self._pool

    def _ensure_pool(self) -> Any:
        conn = self._conn()
        try:
            pool = conn.storagePoolLookupByName(POOL_NAME)
        except self.lv.libvirtError:
            xml = (f"<pool type='dir'><name>{POOL_NAME}</name>"
                   f"<target><path>{POOL_PATH}</path></target></pool>")
            try:
                pool = conn.storagePoolDefineXML(xml, 0)
                pool.build(0)
                log.info("libvirt %s: defined storage pool %s at %s", self.uri, POOL_NAME,
                         POOL_PATH)
            except self.lv.libvirtError:  # another worker defined it meanwhile
                pool = conn.storagePoolLookupByName(POOL_NAME)
        if not pool.isActive():
            with contextlib.suppress(self.lv.libvirtError):  # started by another worker
                pool.create(0)
        self._refresh(pool)
        return pool

    def _refresh(self, pool: Any) -> None:
        """Re-read the pool's directory, waiting while another worker's upload keeps it
        busy: libvirt refuses a refresh then instead of queueing it."""
        deadline = time.monotonic() + POOL_BUSY_TIMEOUT_S
        while True:
            try:
                pool.refresh(0)
                return
            except self.lv.libvirtError as e:
                if POOL_BUSY_MARK not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def remote_path(self, name: str) -> str:
        return f"{POOL_PATH}/{name}"

    def _volume(self, name: str) -> Any | None:
        try:
            return self.pool.storageVolLookupByName(name)
        except self.lv.libvirtError:
            return None

    def _create(self, name: str, capacity: int, fmt: str = "raw",
                backing: tuple[str, str] | None = None) -> Any:
        back = ""
        if backing is not None:
            back = (f"<backingStore><path>{backing[0]}</path>"
                    f"<format type='{backing[1]}'/></backingStore>")
        xml = (f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
               f"<allocation unit='bytes'>0</allocation>"
               f"<target><format type='{fmt}'/></target>{back}</volume>")
        return self.pool.createXML(xml, 0)

    # -- images --
    def image(self, local: Path) -> str:
        """The remote path of `local`'s content, uploaded the first time any run needs it.
        Found once per process: every restore places the same kernel and disks again."""
        name = image_volume_name(local)
        if name not in self._uploaded:
            done = name + DONE_SUFFIX
            if self._volume(done) is None:
                with _upload_lock(name):
                    self._refresh(self.pool)  # another run on this host may have finished it
                    if self._volume(done) is None:
                        self._upload_image(local, name)
                        self._create(done, 0)
            self._uploaded.add(name)
        return self.remote_path(name)

    def _upload_image(self, local: Path, name: str) -> None:
        stale = self._volume(name)
        if stale is not None:  # an upload that did not finish
            stale.delete(0)
        size = local.stat().st_size
        vol = self._create(name, size)
        log.info("libvirt %s: uploading %s (%d MB) as %s", self.uri, local,
                 size >> 20, name)
        upload_sparse(self._conn(), self.lv, vol, local)

    # -- run volumes --
    def run_name(self, label: str) -> str:
        """A name no other volume of this process has, on any host (two URIs may reach
        one daemon)."""
        return f"{self.prefix}{next(_RUN_NUMBERS)}_{label}"

    def overlay(self, local: Path, backing: str, backing_format: str, capacity: int
                ) -> RemoteFile:
        """A qcow2 overlay volume over the remote `backing`, with its placeholder at
        `local`."""
        self.collect_garbage()
        name = self.run_name(local.name)
        self._create(name, capacity, "qcow2", (backing, backing_format))
        remote = RemoteFile(self.uri, self.remote_path(name), "qcow2", capacity)
        self.place(remote, local)
        return remote

    def place(self, remote: RemoteFile, local: Path) -> None:
        """Write `remote`'s placeholder at `local` and register it (see `collect_garbage`)."""
        remote.write_placeholder(local)
        registry = local.parent.parent / ".libvirt-run-volumes"
        registry.mkdir(exist_ok=True)
        self._registries.add(registry)
        link = registry / Path(remote.path).name
        link.unlink(missing_ok=True)
        os.link(local, link)

    def collect_garbage(self) -> None:
        """Delete the run volumes whose placeholders the Machine has removed (a stopped
        machine's overlay, a released snapshot): the registry's link is then the last."""
        for registry in list(self._registries):
            for link in list(registry.glob("*")) if registry.exists() else []:
                with contextlib.suppress(OSError):
                    if link.stat().st_nlink > 1:
                        continue
                    self.delete_run_file(link.name)
                    link.unlink()

    def delete_run_file(self, name: str) -> None:
        vol = self._volume(name)
        if vol is None:  # written by libvirt itself (a saved state): not known to the pool
            with contextlib.suppress(self.lv.libvirtError):
                self._refresh(self.pool)
            vol = self._volume(name)
        if vol is not None:
            with contextlib.suppress(self.lv.libvirtError):
                vol.delete(0)

    def cleanup(self) -> list[str]:
        """Delete every volume of this run (at the end of it)."""
        return self._delete_where(lambda name: name.startswith(self.prefix))

    def sweep(self, alive: Callable[[RunVolumeName], bool]) -> list[str]:
        """Delete run volumes whose owning harness process is gone."""
        def stale(name: str) -> bool:
            parsed = RunVolumeName.parse(name)
            return parsed is not None and not alive(parsed)
        removed = self._delete_where(stale)
        if removed:
            log.warning("libvirt %s: removed %d volume(s) of runs that are gone: %s",
                        self.uri, len(removed), ", ".join(removed))
        return removed

    def _delete_where(self, match: Callable[[str], bool]) -> list[str]:
        removed = []
        self._refresh(self.pool)
        for vol in self.pool.listAllVolumes(0):
            name = vol.name()
            if match(name):
                with contextlib.suppress(self.lv.libvirtError):
                    vol.delete(0)
                    removed.append(name)
        for registry in self._registries:
            for link in registry.glob("*") if registry.exists() else []:
                if link.name in removed:
                    link.unlink(missing_ok=True)
        return removed


@contextlib.contextmanager
def _upload_lock(name: str) -> Iterator[None]:
    """One upload of a volume at a time from this machine (xdist workers, parallel runs)."""
    locks = cache_dir() / "libvirt-upload-locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def upload_sparse(conn: Any, lv: Any, vol: Any, local: Path) -> None:
    """Upload `local` into `vol`, sending holes as holes (libvirt's sparse streams)."""
    size = local.stat().st_size
    stream = conn.newStream(0)
    with local.open("rb") as f:
        fd = f.fileno()

        def read(_stream: Any, nbytes: int, _opaque: Any) -> bytes:
            return os.read(fd, nbytes)

        def hole(_stream: Any, _opaque: Any) -> list[Any]:
            cur = os.lseek(fd, 0, os.SEEK_CUR)
            if cur >= size:
                return [True, 0]
            try:
                data = os.lseek(fd, cur, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                data = size
            if data > cur:
                section = [False, data - cur]
            else:
                section = [True, os.lseek(fd, cur, os.SEEK_HOLE) - cur]
            os.lseek(fd, cur, os.SEEK_SET)  # libvirt reads on from where it was
            return section

        def skip(_stream: Any, length: int, _opaque: Any) -> int:
            os.lseek(fd, length, os.SEEK_CUR)
            return 0

        try:
            vol.upload(stream, 0, size, lv.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            stream.sparseSendAll(read, hole, skip, fd)
            stream.finish()
        except BaseException:
            with contextlib.suppress(Exception):
                stream.abort()
            raise


# ----- the event loop ---------------------------------------------------------------------------
_event_loop_lock = threading.Lock()
_event_loop_started = False


def ensure_event_loop(lv: Any) -> None:
    """libvirt's default event loop in a daemon thread, registered before the first
    remote connection opens: it feeds console streams and keepalives, so a host that goes
    away is noticed within seconds instead of at the next call."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        lv.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                lv.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


# ----- the console of a remote domain -------------------------------------------------------------
class ConsoleMirror:
    """Appends a domain's serial console (a pty on its host, read over the libvirt
    connection as a non-blocking stream fed by the event loop) to the machine's local
    console file, as a file serial would.

    (A blocking `recv` in a thread of its own deadlocks libvirt 9's remote driver when the
    domain is destroyed meanwhile.)"""

    def __init__(self, conn: Any, lv: Any, dom: Any, console: Path) -> None:
        self.lv = lv
        self._lock = threading.Lock()
        self._open = True
        self.out = console.open("ab")
        self.stream = conn.newStream(lv.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, self.stream, lv.VIR_DOMAIN_CONSOLE_FORCE)
        events = (lv.VIR_STREAM_EVENT_READABLE | lv.VIR_STREAM_EVENT_ERROR
                  | lv.VIR_STREAM_EVENT_HANGUP)
        self.stream.eventAddCallback(events, self._on_event, None)

    def _on_event(self, stream: Any, events: int, _opaque: Any) -> None:
        with self._lock:
            if not self._open:
                return
            if events & self.lv.VIR_STREAM_EVENT_READABLE and self._drain(stream):
                return
            if events & (self.lv.VIR_STREAM_EVENT_ERROR | self.lv.VIR_STREAM_EVENT_HANGUP):
                self._finish()

    def _drain(self, stream: Any) -> bool:
        """Copy what is there; False once the stream has ended (and is finished)."""
        while True:
            try:
                data = stream.recv(65536)
            except self.lv.libvirtError:
                self._finish()
                return False
            if data == -2:  # nothing more for now
                return True
            if not data:  # the domain ended
                self._finish()
                return False
            self.out.write(data)
            self.out.flush()

    def _finish(self) -> None:
        self._open = False
        with contextlib.suppress(Exception):
            self.stream.eventRemoveCallback()
        with contextlib.suppress(Exception):
            self.stream.abort()
        self.out.close()

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._finish()
