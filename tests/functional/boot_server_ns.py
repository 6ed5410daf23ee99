"""Run the agent's TFTP (and HTTP boot) servers in a network namespace.

A socket belongs to the namespace it was made in, and a classic-mode TFTP
server makes one per transfer; so the servers run in a process started
with ``ip netns exec`` (its PID is the server's: CPU seconds can be read
from ``/proc/<pid>/stat``). The process reads commands on stdin:
``metrics`` prints the rendered metrics, then ``END``; ``sessions``
prints the TFTP session count; ``data_path`` which TFTP data path runs
(``compiled`` or ``python``); end of input stops it.

Usage: ``python -m tests.functional.boot_server_ns '<json settings>'``
"""

import json
import sys

from vmetal_ironic.dhcp_agent import http_boot
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import tftp


def main():
    settings = json.loads(sys.argv[1])
    metrics = metrics_mod.Metrics()
    services = [tftp.TftpService(settings['root'], settings['address'],
                                 metrics=metrics, **settings['tftp'])]
    if 'http' in settings:
        services.append(http_boot.HttpBootService(
            settings['root'], settings['address'], metrics=metrics,
            **settings['http']))
    for service in services:
        service.start()
    print('READY', flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == 'metrics':
            print(metrics.render(), 'END', sep='\n', flush=True)
        elif command == 'sessions':
            print(services[0].session_count, flush=True)
        elif command == 'data_path':
            print(services[0].data_path, flush=True)
    for service in services:
        service.stop()


if __name__ == '__main__':
    main()
