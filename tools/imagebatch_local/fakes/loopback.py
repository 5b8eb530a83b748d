"""HTTP servers on 127.0.0.1, served from a daemon thread: how every local fake listens."""

from __future__ import annotations

import socketserver
import threading


def serve_in_background(server: socketserver.BaseServer, name: str) -> threading.Thread:
    """Serve `server` from a daemon thread (a hung fake must not keep the CLI alive)."""
    # A short poll interval makes stop_serving() prompt: shutdown() waits for one poll.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_serving(server: socketserver.BaseServer | None, thread: threading.Thread | None) -> None:
    """Stop serving, free the port, and wait (a bounded while) for the thread to end."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=10)
