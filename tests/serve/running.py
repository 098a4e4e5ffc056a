"""uvicorn serving an app in a background thread on a free loopback port (shared by the serve tests)."""

import socket
import threading
import time

import uvicorn

from altdiffusion.serve.server import uvicorn_config


class RunningServer:
    """``config``: serve with :func:`~altdiffusion.serve.server.uvicorn_config` (its connection limits
    and timeouts), as ``altdiffusion serve`` does; without it, uvicorn's plain defaults."""

    def __init__(self, app, config=None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        if config is None:
            settings = uvicorn.Config(app, log_level="warning", lifespan="on")
        else:
            settings = uvicorn_config(app, config, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(settings)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
