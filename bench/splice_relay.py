"""The cheapest relay there is, the ceiling bench_bridge compares with.

``python splice_relay.py LISTEN_ADDRESS PORT UPSTREAM_ADDRESS UPSTREAM_PORT``
forwards every TCP connection to the upstream with no HTTP in between: the
request goes up as it comes, the answer comes back by blocking ``splice``
through a 1 MiB pipe, a thread per connection. It pays the extra TCP hop
and nothing else, so the agent's bridge cannot beat it: what separates it
from "direct" is the hop itself (bench/bench_bridge.py prints all three).
Bench only, never part of the product.
"""

import fcntl
import os
import socket
import sys
import threading

from vmetal_ironic.lab import proxy


def _serve(client, upstream_address):
    upstream = socket.create_connection(upstream_address)
    # The request goes up as the lab's own relay copies (the small side).
    threading.Thread(target=proxy._pipe, args=(client, upstream),
                     daemon=True).start()
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1048576)
    try:
        while True:
            taken = os.splice(upstream.fileno(), write_fd, 1048576)
            if not taken:
                break
            while taken:
                taken -= os.splice(read_fd, client.fileno(), taken)
    except OSError:
        pass
    finally:
        for fd in (read_fd, write_fd):
            os.close(fd)
        upstream.close()
        client.close()


def main(address, port, upstream_address, upstream_port):
    listener = socket.create_server((address, int(port)), backlog=128)
    print('relaying', flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve,
                         args=(client, (upstream_address,
                                        int(upstream_port))),
                         daemon=True).start()


if __name__ == '__main__':
    main(*sys.argv[1:])
