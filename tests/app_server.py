"""Start the app in this process on a free loopback port, for the client and browser tests."""

from __future__ import annotations

import socket
from contextlib import contextmanager

from mambaviz.ui import AppConfig, build_app, launch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(trio: dict[str, str], **config):
    """Serve the app on `trio`'s models at 127.0.0.1 and yield its URL; close the server afterwards."""
    demo = build_app(AppConfig(preset=None, device="cpu", **trio, **config))
    port = free_port()
    launch(demo, server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
