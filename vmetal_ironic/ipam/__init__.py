"""Pure IP address management: pools and the choice of the next address.

Nothing in this package performs I/O or imports Kubernetes, Ironic, scapy
or sqlite3; the stores feed it the addresses already in use.
"""

from vmetal_ironic.ipam.allocator import Allocator
from vmetal_ironic.ipam.errors import (
    IpamError,
    PoolExhausted,
)
from vmetal_ironic.ipam.pool import Pool, parse_pool

__all__ = ['Allocator', 'IpamError', 'Pool', 'PoolExhausted', 'parse_pool']
