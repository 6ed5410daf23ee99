import asyncio
import socket

import pytest

from vmetal_ironic.dhcp_agent.bridge import exchange


def test_error_response_is_complete_and_closes():
    raw = exchange.error_response(403, 'no')
    head, _, body = raw.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 403 Forbidden')
    assert b'Content-Length: 3' in head and b'Connection: close' in head
    assert body == b'no\n'
    assert exchange.error_response(504, 'x', head_only=True).endswith(
        b'\r\n\r\n')


def test_forwarded_headers_drop_hop_by_hop_and_set_their_own():
    headers = [(b'host', b'198.51.100.1:8080'), (b'connection', b'keep-alive'),
               (b'keep-alive', b'300'), (b'proxy-authorization', b'x'),
               (b'range', b'bytes=0-9'), (b'content-length', b'5'),
               (b'transfer-encoding', b'chunked'), (b'upgrade', b'h2c'),
               (b'x-openstack-ironic-api-version', b'1.68')]
    result = exchange.forwarded_headers(headers, 'ironic:6385', length=7)
    assert result == [(b'host', b'ironic:6385'), (b'range', b'bytes=0-9'),
                      (b'x-openstack-ironic-api-version', b'1.68'),
                      (b'content-length', b'7'), (b'connection', b'close')]
    chunked = exchange.forwarded_headers([], None, chunked=True)
    assert chunked == [(b'transfer-encoding', b'chunked'),
                       (b'connection', b'close')]


def test_a_write_to_a_client_gone_is_a_cut():
    """A client reset while the bridge's buffer is nearly empty: no
    drain() would tell, so the next write must."""

    async def scenario():
        with socket.create_server(('127.0.0.1', 0)) as listener:
            _reader, writer = await asyncio.open_connection(
                *listener.getsockname())
            client, _ = listener.accept()
            # A reset, as a client that quits with unread data sends.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              b'\x01\x00\x00\x00\x00\x00\x00\x00')
            client.close()
            await exchange._write(writer, b'x' * 100, 1.0)
            for _ in range(100):
                if writer.transport.is_closing():
                    break
                await asyncio.sleep(0.01)
            try:
                with pytest.raises(exchange._Cut):
                    await exchange._write(writer, b'y' * 100, 1.0)
            finally:
                writer.transport.abort()

    asyncio.run(scenario())
