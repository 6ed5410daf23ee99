"""Reach the test's kube-apiserver (loopback of this namespace) from a
network namespace the test made.

Network namespaces share the filesystem, so a Unix socket crosses them:
inside the namespace ``python ns_relay.py <port> <socket>`` listens on
``127.0.0.1:<port>`` and carries every connection to the socket; here, a
:class:`UnixToTcp` thread carries each one on to ``127.0.0.1:<port>``.
With the same port on both sides the API URL and its certificate
(``IP:127.0.0.1``) are the same inside and out. Bytes are copied as they
are (TLS end to end); nothing leaves the machine.
"""

import contextlib
import os
import socket
import sys
import threading


def _pipe(source, target):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _join(one, other):
    for source, target in ((one, other), (other, one)):
        threading.Thread(target=_pipe, args=(source, target),
                         daemon=True).start()


def _serve(listener, connect, stop=None):
    while stop is None or not stop.is_set():
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        _join(client, upstream)


class UnixToTcp:
    """Listen on the Unix socket ``path``; connect each client to
    ``127.0.0.1:port`` of this namespace. Stopped by :meth:`close`."""

    def __init__(self, path, port):
        self.path = str(path)
        self.port = port
        self.stop = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.thread = threading.Thread(
            target=_serve, args=(self.listener, self._connect, self.stop),
            daemon=True)
        self.thread.start()

    def _connect(self):
        return socket.create_connection(('127.0.0.1', self.port), timeout=10)

    def close(self):
        self.stop.set()
        self.listener.close()
        os.unlink(self.path)


def main(port, path):
    """Inside the namespace: 127.0.0.1:port -> the Unix socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(('127.0.0.1', int(port)))
    listener.listen(64)

    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return sock

    print('listening', flush=True)
    _serve(listener, connect)


if __name__ == '__main__':
    main(*sys.argv[1:3])
