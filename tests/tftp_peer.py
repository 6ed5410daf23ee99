"""A TFTP peer for tests: sends exactly the datagrams a test asks for.

Independent of ``vmetal_ironic.dhcp_agent.tftp_packet`` (it packs with ``struct``
itself) so the server is checked against a second encoder. It also knows
how to receive a whole file with a window (RFC 7440), which none of the
packaged command-line clients do.
"""

import socket
import struct
import time


def rrq(name, mode=b'octet', **options):
    """:returns: the bytes of a read request (names may be bytes)."""
    def raw(value):
        return value if isinstance(value, bytes) else str(value).encode()
    body = raw(name) + b'\0' + raw(mode) + b'\0'
    for key, value in options.items():
        body += raw(key) + b'\0' + raw(value) + b'\0'
    return b'\0\x01' + body


def ack(block):
    return struct.pack('!HH', 4, block & 0xffff)


class Peer:
    """One UDP socket talking to a TFTP server.

    :param server: ``(address, port)`` of the listening socket.
    """

    def __init__(self, server, timeout=5.0):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((server[0], 0))
        self.sock.settimeout(timeout)
        self.transfer = None  # where the server answers from

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data, to=None):
        self.sock.sendto(data, to or self.server)

    def recv(self):
        """:returns: ``(opcode, payload, source)``."""
        data, source = self.sock.recvfrom(70000)
        return struct.unpack('!H', data[:2])[0], data[2:], source

    def expect_error(self):
        """:returns: the error code of the ERROR the server answers."""
        opcode, payload, _source = self.recv()
        assert opcode == 5, (opcode, payload)
        return struct.unpack('!H', payload[:2])[0]

    def read_rest(self, first, source):
        """Finish a plain transfer (512-byte blocks, one per ACK) whose first
        DATA, block 1, came from ``source``: acknowledge each block, the
        last one too, asserting every answer is DATA.

        :param first: the payload of that first DATA (block number and
            data).
        :returns: the whole file.
        """
        chunks, block = [first[2:]], 1
        while len(chunks[-1]) == 512:
            self.send(ack(block), source)
            opcode, payload, _source = self.recv()
            assert opcode == 3, (opcode, payload)
            block += 1
            chunks.append(payload[2:])
        self.send(ack(block), source)
        return b''.join(chunks)

    def download(self, name, windowsize=1, blksize=512, deadline=60.0,
                 ack_every=None, **options):
        """Receive ``name`` whole, acknowledging each window (RFC 7440).

        :param ack_every: blocks per ACK (defaults to the granted window).
        :returns: ``(data, granted options)``.
        """
        extra = dict(options)
        if windowsize != 1:
            extra['windowsize'] = windowsize
        if blksize != 512:
            extra['blksize'] = blksize
        self.send(rrq(name, **extra))
        granted = {}
        chunks = []
        expected = 1
        window = 1
        seen_in_window = 0
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            opcode, payload, source = self.recv()
            self.transfer = source
            if opcode == 6:
                fields = payload.split(b'\0')[:-1]
                granted = {fields[i].decode(): int(fields[i + 1])
                           for i in range(0, len(fields), 2)}
                blksize = granted.get('blksize', 512)
                window = ack_every or granted.get('windowsize', 1)
                self.send(ack(0), source)
                continue
            if opcode == 5:
                raise OSError(f'TFTP error {payload!r}')
            assert opcode == 3, opcode
            block = struct.unpack('!H', payload[:2])[0]
            if block != expected & 0xffff:
                continue  # duplicate or out of order: wait for a resend
            chunks.append(payload[2:])
            seen_in_window += 1
            last = len(payload) - 2 < blksize
            if last or seen_in_window >= window:
                self.send(ack(expected), source)
                seen_in_window = 0
            expected += 1
            if last:
                return b''.join(chunks), granted
        raise TimeoutError(f'{name} not complete after {deadline} s')
