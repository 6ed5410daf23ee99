"""One daemon thread per background job of the store (the reconcile
loop, the claim watch): started at most once, joined on close."""

import threading


class BackgroundJob:
    """Base of a store job that runs on its own daemon thread."""

    #: The thread's name, for people reading a thread dump.
    thread_name = 'vmetal-store-job'

    _thread = None

    def _start_thread(self, target, *args):
        """Run ``target(*args)`` on the job's thread, unless it runs."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=target, args=args,
                                        name=self.thread_name, daemon=True)
        self._thread.start()

    def join(self, timeout):
        """Wait at most ``timeout`` seconds for the thread to end."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
