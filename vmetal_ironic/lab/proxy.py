"""A TCP relay from the host's loopback into a lab namespace.

Ironic's API listens in the lab's server namespace, where the machine's
ramdisk reaches it; the lab (and a user's ``baremetal`` client) talk to
it on the host's 127.0.0.1. The listening socket is made on the host and
handed to this process, which runs inside the namespace: a socket keeps
the namespace it was made in, so accepted connections come from the
host and outgoing ones go to the namespace's address. No lab address is
ever put on a host interface.

Run as ``python -m vmetal_ironic.lab.proxy <fd> <host> <port>``.
"""

import contextlib
import socket
import subprocess
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


def _serve(client, destination):
    try:
        upstream = socket.create_connection(destination, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threads = [threading.Thread(target=_pipe, args=pair, daemon=True)
               for pair in ((client, upstream), (upstream, client))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    upstream.close()


def relay(listener, destination):
    """Accept forever, relaying each connection to ``destination``."""
    while True:
        client, _peer = listener.accept()
        threading.Thread(target=_serve, args=(client, destination),
                         daemon=True).start()


def start(topology, namespace, host, port, log_name='proxy.log'):
    """Listen on a free host port and relay into ``namespace``.

    :returns: ``(port on 127.0.0.1, Popen)``.
    """
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(64)
    local_port = listener.getsockname()[1]
    proc = topology.spawn(
        namespace, [sys.executable, '-m', 'vmetal_ironic.lab.proxy',
                    str(listener.fileno()), host, str(port)], log_name,
        pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL)
    listener.close()
    return local_port, proc


def main(argv=None):
    fd, host, port = (argv or sys.argv[1:])[:3]
    listener = socket.socket(fileno=int(fd))
    relay(listener, (host, int(port)))


if __name__ == '__main__':
    main()
