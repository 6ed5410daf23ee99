"""TCP relays between the host's loopback and a lab namespace.

A socket keeps the namespace it was made in: a listening socket made in
one namespace and handed to a process in the other relays between the
two, and no lab address is ever put on a host interface.

* :func:`start` (into the namespace): Ironic's API listens in the lab's
  server namespace, where the machine's ramdisk reaches it; the lab (and a
  user's ``baremetal`` client) talk to it on the host's 127.0.0.1. The
  listener is made on the host, the relay runs inside the namespace.
* :func:`start_outward` (out of the namespace): a kube-apiserver on the
  host's 127.0.0.1 is reached by Ironic's conductor and the DHCP agent in
  the namespace on the namespace's own 127.0.0.1 and the same port, so the
  API URL (and the name its certificate carries) stays the same. The
  listener is made inside the namespace (by a short helper that passes it
  back over a Unix socket), the relay runs on the host.

Run as ``python -m vmetal_ironic.lab.proxy <fd> <host> <port>`` (relay)
or ``python -m vmetal_ironic.lab.proxy --listen <unix fd> <port>``.
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


def _listen_and_hand_back(unix_fd, port):
    """Listen on 127.0.0.1:``port`` here and send the socket on."""
    channel = socket.socket(fileno=unix_fd)
    listener = socket.socket()
    listener.bind(('127.0.0.1', port))
    listener.listen(64)
    socket.send_fds(channel, [b'1'], [listener.fileno()])
    channel.close()


def start_outward(topology, namespace, port, log_name='proxy-out.log'):
    """Relay ``namespace``'s 127.0.0.1:``port`` to the host's.

    :returns: the relay's ``Popen`` (the topology stops it).
    :raises OSError: the port is taken inside the namespace.
    """
    ours, theirs = socket.socketpair()
    with ours, theirs:
        helper = topology.spawn(
            namespace, [sys.executable, '-m', 'vmetal_ironic.lab.proxy',
                        '--listen', str(theirs.fileno()), str(port)],
            log_name, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        ours.settimeout(30)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
        except (OSError, ValueError):
            fds = []
        helper.wait(30)
    if not fds:
        raise OSError(f'no listener on 127.0.0.1:{port} in {namespace} '
                      f'(see {topology.workdir / log_name})')
    listener = socket.socket(fileno=fds[0])
    try:
        return topology.spawn(
            None, [sys.executable, '-m', 'vmetal_ironic.lab.proxy',
                   str(listener.fileno()), '127.0.0.1', str(port)],
            log_name, pass_fds=(listener.fileno(),),
            stdin=subprocess.DEVNULL)
    finally:
        listener.close()


def main(argv=None):
    args = argv or sys.argv[1:]
    if args[0] == '--listen':
        _listen_and_hand_back(int(args[1]), int(args[2]))
        return
    fd, host, port = args[:3]
    listener = socket.socket(fileno=int(fd))
    relay(listener, (host, int(port)))


if __name__ == '__main__':
    main()
