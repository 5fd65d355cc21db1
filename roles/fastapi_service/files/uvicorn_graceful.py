"""uvicorn, with a graceful shutdown that drops no request that already reached it.

Installed by the fastapi_service role and run by the app's systemd unit with the app's own
virtualenv: `<venv>/bin/python uvicorn_graceful.py <the usual uvicorn arguments>`.

Stock uvicorn, on SIGTERM, stops accepting and then at once closes every connection that has
no request in progress. A connection it accepted a moment earlier, whose request bytes are
still unread, is closed too: that client gets "connection reset" although the server got its
request. With a socket held by systemd (the rest of the queue waits for the next process)
this is the only way a restart still fails a request. Here an idle connection is closed only
after UVICORN_IDLE_GRACE seconds (default 1) of staying idle, so a request already on its way
is served (and its connection then closed) within the graceful-shutdown timeout.

Everything else is uvicorn's own code, unchanged. If uvicorn's internals ever differ from
what this expects, it warns and runs stock uvicorn.
"""

import logging
import os
import sys

GRACE = float(os.environ.get("UVICORN_IDLE_GRACE", "1"))


def _patch(protocol_class):
    stock_shutdown = protocol_class.shutdown

    def shutdown(self):
        idle = self.cycle is None or self.cycle.response_complete
        if not idle or GRACE <= 0 or getattr(self, "_graceful_closing", False):
            return stock_shutdown(self)
        self._graceful_closing = True

        def close_if_idle():
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                stock_shutdown(self)
            else:  # a request arrived meanwhile: close after its response
                self.cycle.keep_alive = False

        self.loop.call_later(GRACE, close_if_idle)
        return None

    protocol_class.shutdown = shutdown


def _patch_server():
    import asyncio

    from uvicorn.server import Server

    stock_wait = Server._wait_tasks_to_complete

    async def wait_tasks_to_complete(self):
        # A connection accepted just before the listener closed may reach its protocol (and
        # send its request) only now: give it GRACE seconds before counting what is left.
        await asyncio.sleep(GRACE)
        await stock_wait(self)

    Server._wait_tasks_to_complete = wait_tasks_to_complete


def apply_patches():
    """Patch uvicorn in this process. Runs at import time, so that the worker processes
    (started with multiprocessing's spawn, which imports this file again) are patched too."""
    patched = []
    for name, patch in (("server", _patch_server), ("h11", lambda: _patch_protocol("h11_impl", "H11Protocol")),
                        ("httptools", lambda: _patch_protocol("httptools_impl", "HttpToolsProtocol"))):
        try:
            patch()
            patched.append(name)
        except (ImportError, AttributeError) as exc:
            logging.getLogger("uvicorn.error").warning("uvicorn_graceful: %s not patched: %s", name, exc)
    return patched


def _patch_protocol(module_name, class_name):
    import importlib

    module = importlib.import_module(f"uvicorn.protocols.http.{module_name}")
    _patch(getattr(module, class_name))


PATCHED = apply_patches()


def pin_release():
    """Resolve <root>/current once, at start: the parent and every worker it (re)spawns run the
    release that was current when the service started, even if the link is switched meanwhile.
    Without this, a parent whose workers keep crashing (a broken release being rolled back)
    respawns workers that import the previous release's code, through the switched link, with
    the broken release's environment."""
    import multiprocessing

    args = sys.argv
    for i, arg in enumerate(args[:-1]):
        if arg == "--app-dir":
            args[i + 1] = os.path.realpath(args[i + 1])
    os.chdir(os.path.realpath(os.getcwd()))
    multiprocessing.set_executable(os.path.join(os.path.realpath(sys.prefix), "bin", "python"))


def main():
    from uvicorn.main import main as uvicorn_main

    pin_release()

    sys.argv[0] = "uvicorn"
    return uvicorn_main()


if __name__ == "__main__":
    sys.exit(main())
