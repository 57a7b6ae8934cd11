"""The ``convscope`` command: mounts every sub-command and maps errors to exit codes.

Exit codes: 0 done, 1 a run or check failed, 2 a usage error (one line on stderr, no
traceback), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from convscope.cli.compare_cmd import add_compare_parser
from convscope.cli.depth_cmd import add_depth_parser
from convscope.cli.evaluate_cmd import add_evaluate_parser
from convscope.cli.env_flags import PREFIX, EnvFlagError, subcommand_parsers, with_env_flags
from convscope.cli.explain_cmd import add_explain_parser
from convscope.cli.inspect_cmd import add_inspect_parser
from convscope.cli.search_cmd import add_search_parser
from convscope.cli.serve_cmd import add_serve_parser
from convscope.cli.setting_flags import FIX_LABELS, FixError, expand_fixes
from convscope.cli.train_cmd import add_train_parser
from convscope.cli.ui_cmd import add_ui_parser
from convscope.tracking.errors import StoreWriteError
from convscope.train.errors import ConfigError, NonFiniteLossError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) pointing at ``--help``, naming the
    ``CONVSCOPE_*`` variable when the flag at fault came from the environment."""

    env_flags: list[str] = []  # set by ``parse`` for the invocation at hand

    def error(self, message: str) -> None:  # type: ignore[override]
        note = ""
        named = [flag for flag in OneLineParser.env_flags if f"argument {flag}" in message]
        if named:
            message += f" (set by {PREFIX}{named[0][2:].upper().replace('-', '_')})"
        else:
            names = sorted(name for name in os.environ if name.startswith(PREFIX) and "_TEST_" not in name)
            if names:
                note = f"convscope: note: flags were also taken from the environment: {', '.join(names)}\n"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n{note}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="convscope",
        description="Train small image CNNs, see and measure what every conv layer learned, and search their shape.",
        epilog="Every flag can also be set in the environment as CONVSCOPE_<FLAG>: --study-name is "
        "CONVSCOPE_STUDY_NAME, --storage is CONVSCOPE_STORAGE. A flag on the command line wins.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_parser(subparsers)
    add_search_parser(subparsers)
    add_compare_parser(subparsers)
    add_depth_parser(subparsers)
    add_explain_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_inspect_parser(subparsers)
    add_ui_parser(subparsers)
    add_serve_parser(subparsers)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Environment flags inserted, ``--fix`` items rewritten into the flags they name, parsed.

    Raises EnvFlagError or FixError for a value that can't be a flag; argparse's own usage
    errors exit 2 as usual."""
    given = list(argv)
    argv = with_env_flags(parser, argv)
    command = argv[0] if argv else ""
    from_env = [token.split("=", 1)[0] for token in argv[len(given) and 1:] if token.startswith("--")]
    from_env = [flag for flag in dict.fromkeys(from_env) if flag not in given[1:] and
                not any(token.startswith(flag + "=") for token in given[1:])]
    OneLineParser.env_flags = from_env
    sub = subcommand_parsers(parser).get(command)
    labels: dict[str, str] = {}
    if sub is not None:
        rest, labels = expand_fixes(sub, argv[1:])
        argv = [command, *rest]
    try:
        args = parser.parse_args(argv)
    finally:
        OneLineParser.env_flags = []
    setattr(args, FIX_LABELS, labels)
    args.env_flags = from_env
    return args


def with_env_source(message: str, env_flags: list[str]) -> str:
    """``message`` with the ``CONVSCOPE_*`` variable named when the flag it starts with came from
    the environment (``--trials must be …`` → ``… (set by CONVSCOPE_TRIALS)``)."""
    for flag in env_flags:
        if message == flag or message.startswith((flag + " ", flag + ":")):
            return f"{message} (set by {PREFIX}{flag[2:].upper().replace('-', '_')})"
    return message


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines are not ours to print
    # MLflow's own "View run … at: <tracking URI>" lines would print a password the URI holds; convscope
    # prints its own links, masked
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    parser = build_parser()
    try:
        args = parse(parser, sys.argv[1:] if argv is None else list(argv))
    except (EnvFlagError, FixError) as error:
        print(f"convscope: error: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads are small: no bars in output
    try:
        return int(args.handler(args) or 0)
    except StoreWriteError as error:  # a run was under way: it failed (exit 1), its line says what to free
        print(f"convscope {args.command}: error: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"convscope {args.command}: error: {with_env_source(str(error), args.env_flags)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"convscope {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from convscope.train.interrupts import terminated

        print("interrupted", file=sys.stderr)
        return 143 if terminated() else 130


if __name__ == "__main__":
    sys.exit(main())
