"""``stqa web``: a page in the browser to ask the model about a video (Gradio; ``pip install 'stqa[web]'``).

    stqa web                          # the bundled model's server in-process; the page on 127.0.0.1:7860
    stqa web --server HOST:PORT       # the page only, asking a running `stqa serve`

The page is a client of the gRPC service (:class:`stqa.client.VideoQAClient`), not a second inference
path. Gradio is imported inside :func:`run` only, so ``stqa --help`` stays fast and the rest of stqa works
without the extra. Nothing leaves the machine: no share link, no analytics, no fonts or scripts from
elsewhere (the browser test checks every request the page makes).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Largest upload the page's web server accepts at all; the gRPC server's own limit is checked before
#: sending (and is usually lower: 16 MiB by default).
MAX_UPLOAD = "64mb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``stqa web``."""
    parser.add_argument("--server", default=None, metavar="HOST:PORT",
                        help="ask this running `stqa serve` (default: start the bundled model's server "
                             "in this process on a free loopback port)")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], dest="checkpoints",
                        help="without --server: checkpoint(s) the in-process server loads (default: the "
                             "bundled model); repeat for one per task")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address the page is served on (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port of the page (default %(default)s; 0 picks a free one)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="deadline of each question in seconds (default %(default)g)")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa web``: serve the page until Ctrl-C or SIGTERM, then stop cleanly (0)."""
    # Before Gradio is imported: it reads this at import time, and without it it reports usage to its
    # makers and asks the internet for its latest version.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401 - only to say clearly what is missing
    except ImportError:
        print("stqa web: needs Gradio: pip install 'stqa[web]'", file=sys.stderr)
        return 2
    # Gradio (seconds to import) only once the page is really wanted: `stqa --help` must stay fast.
    from .backend import EXAMPLES_DIR, Asker, load_examples, local_server
    from .page import CSS, build, theme

    if args.server is not None and args.checkpoints:
        print("stqa web: --checkpoint is for the in-process server; with --server the server chose its model",
              file=sys.stderr)
        return 2
    local = None
    if args.server is None:
        print("stqa web: starting the model's gRPC server in this process ...", flush=True)
        local = local_server(args.checkpoints).start()
    address = args.server or local.address
    asker = Asker(address, timeout_s=args.timeout)
    page = None
    try:
        if args.server is not None and asker.limits() is None:
            print(f"stqa web: warning: no stqa server answers at {address} yet; the page will say so until "
                  f"one does", file=sys.stderr)
        page = build(asker, load_examples())
        port = _free_port(args.host) if args.port == 0 else args.port
        try:
            page.launch(server_name=args.host, server_port=port, share=False, inbrowser=False, quiet=True,
                        prevent_thread_lock=True, show_error=True, ssr_mode=False, mcp_server=False,
                        max_file_size=MAX_UPLOAD, allowed_paths=[str(EXAMPLES_DIR)], theme=theme(), css=CSS,
                        footer_links=[], run_history=False)
        except OSError as err:
            print(f"stqa web: cannot serve the page on {args.host}:{port} ({err}); choose another --port",
                  file=sys.stderr)
            return 1
        # One parseable line (the tests and `make web` read the URL from it).
        print(f"stqa web: page at http://{args.host}:{port}/ (answers from grpc {address})", flush=True)
        _wait_for_signal()
        print("stqa web: stopping", flush=True)
        return 0
    finally:
        if page is not None:
            page.close()
        asker.close()
        if local is not None:
            local.stop()


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (both stop the page cleanly)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):  # wake now and then: a plain wait() would defer the handler on some Pythons
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
