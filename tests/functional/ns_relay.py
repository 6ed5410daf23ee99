"""Reach the test's kube-apiserver (loopback of this namespace) from a
network namespace the test made.

A socket keeps the namespace it was made in: a short helper run inside
the namespace makes a listening socket on its ``127.0.0.1:<port>`` and
hands it back over a Unix socket pair (SCM_RIGHTS); here the lab's relay
(:func:`vmetal_ironic.lab.proxy.relay`) accepts on it and connects each
client to this namespace's ``127.0.0.1:<port>``. With the same port on
both sides the API URL and its certificate (``IP:127.0.0.1``) are the
same inside and out; bytes are copied as they are (TLS end to end) and
nothing leaves the machine.
"""

import contextlib
import socket
import subprocess
import sys
import threading

from vmetal_ironic.lab import proxy

_LISTEN = '''
import socket, sys
channel = socket.socket(fileno=int(sys.argv[1]))
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('127.0.0.1', int(sys.argv[2])))
listener.listen(64)
socket.send_fds(channel, [b'.'], [listener.fileno()])
'''


def listen_in(namespace, port):
    """A listening socket on ``127.0.0.1:port`` of ``namespace``."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        subprocess.run(['ip', 'netns', 'exec', namespace, sys.executable,
                        '-c', _LISTEN, str(theirs.fileno()), str(port)],
                       pass_fds=(theirs.fileno(),), check=True, timeout=30,
                       capture_output=True)
        _data, fds, _flags, _address = socket.recv_fds(ours, 1, 1)
    return socket.socket(fileno=fds[0])


def _relay(listener, port):
    # Closing the listener ends the relay.
    with contextlib.suppress(OSError):
        proxy.relay(listener, ('127.0.0.1', port))


def relay_into(namespace, port):
    """Carry connections to ``127.0.0.1:port`` inside ``namespace`` to the
    same address here, until the returned listener is closed."""
    listener = listen_in(namespace, port)
    threading.Thread(target=_relay, args=(listener, port),
                     daemon=True).start()
    return listener
