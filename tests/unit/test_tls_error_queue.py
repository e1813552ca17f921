"""A stale entry on the thread's OpenSSL error queue must not fail a healthy TLS socket.

Python 3.13+ with OpenSSL 3.4+ (the 24.11 and 26.05 roots) raised BrokenPipeError
on a would-block read or write of a healthy socket when another connection of the
same thread had left an ``ERR_LIB_SYS`` entry behind (CPython issue 148594): the
driver's client lost its own scheduler. hpcorch's TLS sockets clear the queue first.
"""

from __future__ import annotations

import ctypes
import pickle
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from distributed.security import Security

from hpcorch.provision import security as sec_mod
from hpcorch.provision.security import QueueClearingSSLSocket, libcrypto, temporary_security

ERR_LIB_SYS = 2
EPIPE = 32


def _stale_sys_error(lib: Any) -> None:
    """What a connection that really broke leaves on this thread's queue (OpenSSL 3.4+)."""
    lib.ERR_new()
    lib.ERR_set_debug(b"test.c", 1, b"test")
    lib.ERR_set_error(ERR_LIB_SYS, EPIPE, None)


@pytest.fixture
def lib() -> Any:
    found = libcrypto()
    if found is None:  # an ssl module linked statically: nothing hpcorch can clear
        pytest.skip("this Python's libcrypto is not a shared library")
    for name in ("ERR_new", "ERR_set_debug", "ERR_set_error"):
        if not hasattr(found, name):
            pytest.skip(f"libcrypto has no {name} (OpenSSL < 3.0)")
    found.ERR_set_error.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    return found


def _pair(security: Any) -> Iterator[tuple[ssl.SSLSocket, list[ssl.SSLSocket]]]:
    server_ctx = security.get_listen_args("scheduler")["ssl_context"]
    client_ctx = security.get_connection_args("client")["ssl_context"]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[ssl.SSLSocket] = []
    ready = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        held.append(server_ctx.wrap_socket(conn, server_side=True))
        ready.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = client_ctx.wrap_socket(socket.create_connection(listener.getsockname()))
    assert ready.wait(10)
    client.setblocking(False)
    try:
        yield client, held
    finally:
        client.close()
        for s in held:
            s.close()
        listener.close()


@pytest.fixture
def tls_pair() -> Iterator[tuple[ssl.SSLSocket, list[ssl.SSLSocket]]]:
    yield from _pair(temporary_security())


def test_hpcorch_contexts_make_queue_clearing_sockets(tls_pair: Any) -> None:
    client, held = tls_pair
    assert isinstance(client, QueueClearingSSLSocket)
    assert isinstance(held[0], QueueClearingSSLSocket)


def test_a_stale_error_does_not_fail_a_healthy_read(lib: Any, tls_pair: Any) -> None:
    client, _ = tls_pair
    _stale_sys_error(lib)
    with pytest.raises(ssl.SSLWantReadError):  # nothing to read yet: healthy
        client.recv(10)


def test_a_stale_error_does_not_fail_a_healthy_write(lib: Any, tls_pair: Any) -> None:
    client, _ = tls_pair
    with pytest.raises(ssl.SSLWantWriteError):  # the peer reads nothing: buffers fill
        for _ in range(10_000):
            _stale_sys_error(lib)
            client.send(b"x" * 65536)


def test_without_the_fix_the_stale_error_is_what_broke_the_socket(lib: Any) -> None:
    """The failure this guards against, shown on plain distributed contexts: any
    error but "would block" (BrokenPipeError on 3.13+, SSLError before)."""
    plain = Security.temporary()  # type: ignore[no-untyped-call]
    for client, _ in _pair(plain):
        assert not isinstance(client, QueueClearingSSLSocket)
        with pytest.raises(OSError) as caught:
            for _ in range(10_000):
                _stale_sys_error(lib)
                client.send(b"x" * 65536)
        assert not isinstance(caught.value, ssl.SSLWantWriteError), caught.value


def test_the_security_pickles_for_a_local_clusters_worker_processes() -> None:
    security = temporary_security()
    again = pickle.loads(pickle.dumps(security))
    assert type(again).__name__ == "QueueClearingSecurity"
    assert type(again) is sec_mod.QueueClearingSecurity
    ctx = again.get_connection_args("worker")["ssl_context"]
    assert ctx.sslsocket_class is QueueClearingSSLSocket
