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
``sendfile(2)`` (:func:`send_file`), from the page cache, the same way:
each download whole on a thread of its own (:class:`Sender`), or in
turns on the event loop.
"""

import asyncio
import concurrent.futures
import fcntl
import os
import select
import socket

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


def _file_turn(target, source, offset, end, limit):
    """One turn of :func:`send_file` on the event loop: ``sendfile`` from
    ``offset`` until ``end``, ``limit`` bytes moved, or the socket full.
    Never waits (the socket is non-blocking): the loop does.

    :returns: ``(bytes moved, blocked)``; ``(0, False)`` is the file's end.
    :raises OSError: the client's side failed.
    """
    moved = 0
    while offset < end and moved < limit:
        try:
            done = os.sendfile(target, source, offset,
                               min(end - offset, limit - moved))
        except BlockingIOError:
            return moved, True
        if done == 0:
            break
        offset += done
        moved += done
    return moved, False


def _send_whole(target, source, offset, end, idle_timeout):
    """:func:`send_file`'s body on a :class:`Sender` thread: ``sendfile``
    from ``offset`` to ``end``, waiting in ``poll`` whenever the socket is
    full, at most ``idle_timeout`` at a time. The socket stays
    non-blocking (the flag belongs to the socket, which the event loop
    shares): ``poll`` is what waits.

    :returns: the bytes moved.
    :raises ShortBody: the file ends early.
    :raises TimeoutError: the client took nothing for ``idle_timeout``.
    :raises OSError: the client's side failed, or the socket was shut
        down under the thread (:meth:`Sender.send` cancelled).
    """
    poller = select.poll()
    poller.register(target, select.POLLOUT)
    timeout_ms = max(1, int(idle_timeout * 1000))
    start = offset
    while offset < end:
        # The loop's own turn, with no limit but the range: the same
        # sendfile calls; only the waiting differs.
        done, blocked = _file_turn(target, source, offset, end, end - offset)
        offset += done
        if blocked:
            if not poller.poll(timeout_ms):
                raise TimeoutError(f'no progress for {idle_timeout} s')
        elif done == 0:
            raise ShortBody(f'{offset - start} of {end - start} bytes')
    return offset - start


def _shut(fd):
    """Shut the socket ``fd`` down both ways, which wakes a thread in
    ``poll`` or ``sendfile`` on it; ``fd`` stays open."""
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass   # already reset or shut
    finally:
        sock.detach()


class Sender:
    """Threads each of which sends one copy whole.

    One event loop thread drives every connection, and the kernel does a
    socket's sending work (TCP, the veth and bridge hops, the receiver's
    protocol work in the softirq that follows) on the CPU of the thread
    that calls ``sendfile``: with every copy sent from the loop's thread,
    twenty downloads share one CPU while the others idle. A thread of
    this pool takes one download from its first byte to its last, waiting
    for its socket itself (``poll``, bounded by the idle timeout), so the
    loop is not woken at all until the download ended and the kernel's
    work runs on whichever CPU the scheduler gives each thread, as it
    does for a server with a process per connection. A client that stops
    reading holds its thread for the idle timeout, as it holds its
    connection slot; while every thread is busy, further downloads are
    sent from the loop (:meth:`send` says so), so the pool bounds
    threads, never downloads.

    :param threads: how many; at least 1.
    """

    def __init__(self, threads):
        self.threads = threads
        self.free = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix='bridge-send')

    def send(self, target, source, offset, end, idle_timeout):
        """Start sending on a free thread.

        :returns: an asyncio future of the bytes moved (exceptions as
            :func:`_send_whole`), or ``None`` when every thread is busy.
        """
        if not self.free:
            return None
        self.free -= 1
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, _send_whole, target, source, offset, end,
            idle_timeout)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future):
        self.free += 1

    def close(self):
        """Stop taking downloads; those under way end when their
        connections are closed."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _close_all(descriptors):
    for fd in descriptors:
        os.close(fd)


async def send_file(source, target, offset, count, idle_timeout,
                    sender=None):
    """Send ``count`` bytes of file ``source`` from ``offset`` to socket
    ``target`` (non-blocking). Both descriptors are duplicated before the
    first wait, as in :func:`relay`, so the caller may close its own.

    :param sender: a :class:`Sender` whose free thread sends the whole
        range, or ``None`` (or no thread free): on the event loop's
        thread, letting other connections run every :data:`TURN` bytes.
    :returns: ``count``.
    :raises ShortBody: the file ends early.
    :raises TimeoutError: the client took nothing for ``idle_timeout``.
    :raises OSError: the client's side failed (reset, broken pipe).
    """
    loop = asyncio.get_running_loop()
    descriptors = [os.dup(target)]
    pending = None
    try:
        target = descriptors[0]
        descriptors.append(os.dup(source))
        source = descriptors[1]
        end = offset + count
        if sender is not None:
            pending = sender.send(target, source, offset, end, idle_timeout)
        if pending is not None:
            await asyncio.shield(pending)
            pending = None
            return count
        while offset < end:
            done, blocked = _file_turn(target, source, offset, end, TURN)
            offset += done
            if blocked:
                await _ready(loop, target, True, idle_timeout)
            elif done == 0:
                raise ShortBody(f'{count - (end - offset)} of {count} bytes')
            else:
                # A client as fast as the page cache would keep the loop
                # to itself: let the other connections run.
                await asyncio.sleep(0)
        return count
    finally:
        if pending is not None and not pending.done():
            # Cancelled while a thread still sends from them: the socket
            # is shut down to wake the thread, and the descriptors are
            # closed when it is done, never under it (a reused number
            # would send the file to someone else's socket).
            _shut(descriptors[0])
            pending.add_done_callback(
                lambda _future, fds=tuple(descriptors): _close_all(fds))
        else:
            _close_all(descriptors)
