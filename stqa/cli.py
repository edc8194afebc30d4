"""The ``stqa`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together, so a subcommand's options live next to the code that uses them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("stqa.data.synth", "render the synthetic spatio-temporal QA benchmark (GIFs + TGIF-QA files)"),
    "extract": ("stqa.data.extract", "decode videos, sample frames, write backbone features to HDF5"),
    "train": ("stqa.train", "train an ST-VQA model"),
    "evaluate": ("stqa.evaluate", "score a checkpoint on a TGIF-QA style split"),
    "serve": ("stqa.server.main", "run the gRPC VideoQA service"),
    "ask": ("stqa.client", "ask the gRPC service a question about a video"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, import just that subcommand's module (fast start-up)."""
    from stqa import __version__

    parser = argparse.ArgumentParser(prog="stqa", description="Spatio-temporal question answering over video.")
    parser.add_argument("--version", action="version", version=f"stqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``stqa`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
