"""A TCP gate on 127.0.0.1 that tasks in another process can wait at.

A task connects and waits for one byte; the test sees it arrive and decides
when (or whether) to let it through. Causality across processes, no sleeps.
"""

import socket
import threading

from examples.serve import free_port


class Gate:
    def __init__(self) -> None:
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._waiting: list[socket.socket] = []
        self._arrived = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "Gate":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        with self._arrived:
            for connection in self._waiting:
                connection.close()

    @property
    def arrived(self) -> int:
        with self._arrived:
            return len(self._waiting)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        """Block until ``count`` tasks in all have arrived at the gate."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._waiting) >= count, timeout):
                raise TimeoutError(f"{len(self._waiting)} of {count} arrived")

    def let_through(self, index: int) -> None:
        """Let the ``index``-th task to arrive (from 0) go on."""
        with self._arrived:
            self._waiting[index].sendall(b"!")

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._arrived:
                self._waiting.append(connection)
                self._arrived.notify_all()
