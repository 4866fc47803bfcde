"""Connecting to a Dask cluster: the scheduler checked before ``distributed`` is given its address, every
connection bounded in time, and a cluster without workers said at once and waited for a bounded time.

``distributed`` itself would wait for ever on a server that accepts a connection and sends nothing,
and reads another server's first bytes as the length of a frame to allocate (an HTTP reply is
3 EiB), so :func:`check_scheduler` reads the scheduler's handshake first, bounded in time and size.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from dermstack.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: seconds a connection to a Dask scheduler may take to open, and then to send its first message (the
#: handshake); ``distributed.comm.timeouts.connect`` is set to twice this for the client's own connect
CONNECT_TIMEOUT = 5.0
#: seconds a cluster without a worker is waited for ([cv] dask_wait)
WORKER_WAIT = 120.0
#: the most bytes a Dask scheduler's handshake takes (a few dozen); more is not a scheduler
_HANDSHAKE_MAX = 1 << 16


@contextmanager
def quiet_distributed() -> Iterator[None]:
    """``distributed``'s own error logs (with tracebacks) kept back while dermstack handles the error
    and names it in one message (a lost scheduler); they show with ``-vv``. Dask's logging config
    gives some of its loggers (``distributed.client``) their own level, so each is raised."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    names = ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def check_scheduler(address: str, timeout: float | None = None) -> None:
    """A ConfigError naming ``address`` unless a Dask scheduler answers there within ``timeout`` seconds
    to connect and again to send its handshake (the module docstring says why). Only ``tcp://``:
    other transports are left to ``distributed``'s connect timeout."""
    scheme, _, location = address.rpartition("://")
    if scheme not in ("", "tcp"):
        return
    timeout = timeout or CONNECT_TIMEOUT
    host, _, port = location.rpartition(":")

    def refused(why: str) -> ConfigError:
        return ConfigError(f"[cv] dask_address = {address!r}: {why}")

    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except TimeoutError:
        raise refused(f"no connection within {timeout:g} s: the host is unreachable") from None
    except (OSError, ValueError) as e:
        raise refused(f"cannot connect ({getattr(e, 'strerror', None) or e}): no Dask scheduler is listening there") from None
    with sock:
        try:
            head = _receive(sock, 8)
            size = int.from_bytes(head, "little") if len(head) == 8 else 0
            body = _receive(sock, size) if 0 < size <= _HANDSHAKE_MAX else b""
        except TimeoutError:
            raise refused(f"connected, but no Dask handshake came within {timeout:g} s: not a Dask scheduler (a "
                          "scheduler speaks first; an HTTP server, say, waits for a request)") from None
        except OSError as e:
            raise refused(f"the connection failed during the handshake ({e.strerror or e})") from None
    if not _is_handshake(body):
        shown = (head + body)[:24]
        raise refused(f"not a Dask scheduler: it answered {shown!r}; give the scheduler's address (dask scheduler "
                      "prints it, e.g. tcp://host:8786)")


def _receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _is_handshake(body: bytes) -> bool:
    """Whether ``body`` (a frame after its length) is a Dask comm handshake: a msgpack map with the
    peer's pickle protocol."""
    import msgpack
    from distributed.protocol.utils import unpack_frames

    try:
        frames, _ = unpack_frames(body, partial=True)
        message = msgpack.loads(frames[0])
    except Exception:  # noqa: BLE001  anything that does not decode is not a handshake
        return False
    return isinstance(message, dict) and "pickle-protocol" in message


def dask_client(address: str, timeout: str | None = None, worker_wait: float = WORKER_WAIT):
    """A ``distributed.Client`` of the scheduler at ``address``: checked to be one first
    (:func:`check_scheduler`), connected within ``timeout`` (default twice :data:`CONNECT_TIMEOUT`);
    a cluster without a worker is said at once and waited for ``worker_wait`` seconds, then a
    DataError naming the scheduler. Every failure is an error naming the address, before any work."""
    import dask
    from distributed import Client

    check_scheduler(address)
    timeout = timeout or f"{2 * CONNECT_TIMEOUT:g}s"
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": timeout}), quiet_distributed():
            client = Client(address, set_as_default=False, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"[cv] dask_address = {address!r}: cannot reach the Dask scheduler ({e})") from None
    if not client.nthreads():
        log.warning("the Dask scheduler at %s has no workers: waiting up to %g s for one ([cv] dask_wait)", address, worker_wait)
        try:
            client.wait_for_workers(1, timeout=worker_wait)
        except TimeoutError:
            with quiet_distributed():
                client.close()
            raise DataError(f"the Dask scheduler at {address} has no workers; none joined within {worker_wait:g} s "
                            f"([cv] dask_wait): start workers (`dask worker {address}`) on machines that share the run "
                            "directory, then run again") from None
    return client
