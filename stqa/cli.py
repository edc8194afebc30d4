"""The ``stqa`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together, so a subcommand's options live next to the code that uses them.

Errors are reported here, once for every subcommand: an exception that escapes ``run`` becomes one
line ``stqa <command>: error: <message>`` on stderr and a non-zero exit status; ``--debug`` (before
or after the subcommand) also prints the traceback. Exit statuses: 2 for bad input or arguments
(``ValueError``, ``OSError``, ``CheckpointError``, ``SystemExit("error: ...")``, argparse usage
errors), 1 for anything else (a bug: the line says so and suggests ``--debug``), 130 on Ctrl-C.
A subcommand may still print its own ``stqa <command>: ...`` line and return a status itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("stqa.data.synth", "render the synthetic spatio-temporal QA benchmark (GIFs + TGIF-QA files)"),
    "extract": ("stqa.data.extract", "decode videos, sample frames, write backbone features to HDF5"),
    "train": ("stqa.engine.trainer", "train an ST-VQA model"),
    "evaluate": ("stqa.evaluation.command", "score a checkpoint on a TGIF-QA style split"),
    "serve": ("stqa.server.main", "run the gRPC VideoQA service"),
    "ask": ("stqa.client", "ask the gRPC service a question about a video"),
    "web": ("stqa.web", "a page in the browser to ask the model about a video (needs stqa[web])"),
}

EXIT_BAD_INPUT = 2  # same as argparse's usage errors
EXIT_BUG = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

DEBUG_HELP = "on an error, print the full traceback (also accepted after the subcommand)"


class _VersionAction(argparse.Action):
    """``--version``: the version comes from the compiled extension (the one source), so it is looked up
    only when asked for; subcommands that need no extension (``stqa synth``) never load it."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from stqa import __version__  # a lazy attribute: it loads the compiled extension (and torch)

        print(f"stqa {__version__}")  # stdout, as argparse's own version action does
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, import just that subcommand's module (fast start-up)."""
    parser = argparse.ArgumentParser(prog="stqa", description="Spatio-temporal question answering over video.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: when absent after the subcommand, keep what the global flag set
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is not a global flag."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``stqa`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    # usage errors: argparse prints usage + "stqa <cmd>: error: ..." and exits 2. Unknown flags are reported
    # by the subcommand's parser, so a mistyped flag shows that subcommand's usage, not the top level's.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args._run(args) or 0)
    except Exception as err:  # noqa: BLE001 - the one place every subcommand's errors are reported
        return _report(args, err)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print(f"stqa {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as stop:
        if not isinstance(stop.code, str):  # sys.exit(status): the subcommand chose its status
            raise
        # raise SystemExit("error: ...") is how train/evaluate stop on bad arguments
        return _report(args, stop)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand."""
    for action in parser._actions:  # argparse keeps subparsers only on its private action list
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def _report(args: argparse.Namespace, err: BaseException) -> int:
    """Print ``err`` as one line (plus the traceback with ``--debug``); returns the exit status."""
    if args.debug:
        traceback.print_exception(err)
    if isinstance(err, SystemExit):
        message, status = str(err.code).removeprefix("error: "), EXIT_BAD_INPUT
    elif _is_bad_input(err):
        message, status = str(err) or type(err).__name__, EXIT_BAD_INPUT
    else:
        lines = str(err).strip().splitlines()
        first = f"{lines[0]}{' ...' if len(lines) > 1 else ''}" if lines else ""
        message = f"unexpected {type(err).__name__}{': ' + first if first else ''}"
        if not args.debug:
            message += " (this is a bug; rerun with --debug for the traceback)"
        status = EXIT_BUG
    print(f"stqa {args.command}: error: {message}", file=sys.stderr)
    return status


def _is_bad_input(err: BaseException) -> bool:
    """Errors the code raises on purpose for bad files or arguments (their message says what is wrong)."""
    if isinstance(err, (ValueError, OSError)):  # ValueError covers VideoError, UnicodeDecodeError, JSON errors
        return True
    checkpoint = sys.modules.get("stqa.checkpoint")  # only loaded if a subcommand used it
    return checkpoint is not None and isinstance(err, checkpoint.CheckpointError)


if __name__ == "__main__":
    raise SystemExit(main())
