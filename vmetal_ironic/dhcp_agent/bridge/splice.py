"""A body copied from one socket to another inside the kernel.

Once the response head has gone through h11, a body of known length is
the same bytes on both sides; copying it through Python (``recv`` into a
buffer, ``send`` from it) cost the relay two copies across the kernel
boundary and an event-loop round per piece: profiled under
``bench/bench_bridge.py``, three quarters of the agent's time was in those
two calls. ``splice(2)`` moves the pages from the upstream socket into a
pipe and from the pipe into the client's socket without them ever reaching
user space, and a 1 MiB pipe lets one call move a megabyte.

Memory stays bounded: the pipe holds at most its size, and nothing is
read from the upstream while the client is not taking what the pipe
holds. Every wait for a socket is bounded by the idle timeout.

Linux only (``os.splice``, Python 3.10); :func:`available` says whether
it can be used, and the caller copies in Python where it cannot.

A local copy of a file (:mod:`.http_cache`) goes to the client's socket by
``sendfile(2)`` (:func:`send_file`), from the page cache, the same way.
"""

import asyncio
import fcntl
import os

#: The pipe between the two sockets: what one call can move at most.
PIPE_SIZE = 1048576

#: Bytes :func:`send_file` moves before it lets other connections run.
TURN = 8388608

_FLAGS = getattr(os, 'SPLICE_F_MOVE', 0) | getattr(os, 'SPLICE_F_NONBLOCK', 0)


class ShortBody(Exception):
    """The source closed before sending the whole length."""


def available():
    """Whether this kernel and Python can splice."""
    return hasattr(os, 'splice')


def _pipe():
    """A non-blocking pipe, grown to :data:`PIPE_SIZE` where allowed.

    :returns: ``(read_fd, write_fd, capacity)``.
    """
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        capacity = fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        # Past the user's pipe quota (pipe-user-pages-soft) the kernel
        # refuses to grow it: the default size still works, only slower.
        capacity = fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
    return read_fd, write_fd, capacity


async def _ready(loop, fd, writable, timeout):
    """Wait until ``fd`` can be read (or written) or ``timeout`` passed.

    :raises TimeoutError: nothing within ``timeout``.
    """
    waiter = loop.create_future()

    def wake():
        if not waiter.done():
            waiter.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(waiter, timeout)
    finally:
        # Before the descriptor is closed: epoll keeps watching a
        # duplicate's registration otherwise.
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def relay(source, target, count, idle_timeout):
    """Move ``count`` bytes from socket ``source`` to socket ``target``.

    Both are file descriptors of non-blocking sockets; they are duplicated
    before the first wait, so a socket an asyncio transport owns can be
    the target as long as that transport writes nothing meanwhile (its
    buffer empty), and a transport closing its socket during the relay
    only makes the relay fail.

    :returns: ``count``.
    :raises ShortBody: ``source`` closed early.
    :raises TimeoutError: a side made no progress for ``idle_timeout``.
    :raises OSError: either side failed (reset, broken pipe).
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd, capacity = _pipe()
    descriptors = [read_fd, write_fd]
    try:
        source = os.dup(source)
        descriptors.append(source)
        target = os.dup(target)
        descriptors.append(target)
        taken = moved = 0
        while moved < count:
            progress = False
            held = taken - moved
            if taken < count and held < capacity:
                try:
                    done = os.splice(source, write_fd,
                                     min(count - taken, capacity - held),
                                     flags=_FLAGS)
                except BlockingIOError:
                    pass
                else:
                    if done == 0:
                        raise ShortBody(f'{taken} of {count} bytes')
                    taken += done
                    progress = True
            if taken > moved:
                try:
                    moved += os.splice(read_fd, target, taken - moved,
                                       flags=_FLAGS)
                    progress = True
                except BlockingIOError:
                    pass
            if progress:
                continue
            # Nothing moved: with bytes in the pipe only the client can
            # unblock us (the pipe may be full even if the source has
            # more), otherwise only the source.
            if taken > moved:
                await _ready(loop, target, True, idle_timeout)
            else:
                await _ready(loop, source, False, idle_timeout)
        return moved
    finally:
        for fd in descriptors:
            os.close(fd)


async def send_file(source, target, offset, count, idle_timeout):
    """Send ``count`` bytes of file ``source`` from ``offset`` to socket
    ``target`` (non-blocking; duplicated before the first wait, as in
    :func:`relay`).

    :returns: ``count``.
    :raises ShortBody: the file ends early.
    :raises TimeoutError: the client took nothing for ``idle_timeout``.
    :raises OSError: the client's side failed (reset, broken pipe).
    """
    loop = asyncio.get_running_loop()
    target = os.dup(target)
    try:
        end = offset + count
        turn = 0
        while offset < end:
            try:
                done = os.sendfile(target, source, offset, end - offset)
            except BlockingIOError:
                await _ready(loop, target, True, idle_timeout)
                turn = 0
                continue
            if done == 0:
                raise ShortBody(f'{count - (end - offset)} of {count} bytes')
            offset += done
            turn += done
            if turn >= TURN:
                # A client as fast as the page cache would keep the loop
                # to itself: let the other connections run.
                turn = 0
                await asyncio.sleep(0)
        return count
    finally:
        os.close(target)
