"""The ``convscope`` command: mounts every sub-command.

It lives in ``search`` because that is the top of the layering
(search → train → tracking): this is the one place that may import them all.
"""

from __future__ import annotations

import argparse
import os
import sys

from search.cli_depth import add_depth_parser
from search.cli_explain import add_explain_parser
from search.cli_search import add_search_parser
from search.cli_serve import add_serve_parser
from search.env_flags import PREFIX, EnvFlagError, with_env_flags
from search.compare_cmd import add_compare_parser
from train.cli import add_train_parser, add_ui_parser
from train.errors import ConfigError, NonFiniteLossError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    add_ui_parser(subparsers)
    add_serve_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = with_env_flags(parser, sys.argv[1:] if argv is None else argv)
    except EnvFlagError as error:
        print(f"convscope: error: {error}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as stopped:
        names = sorted(name for name in os.environ if name.startswith(PREFIX) and "_TEST_" not in name)
        if names and stopped.code not in (0, None):
            print(f"convscope: note: flags were also taken from the environment: {', '.join(names)}",
                  file=sys.stderr)
        raise
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads are small: no bars in output
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"convscope {args.command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"convscope {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
