"""`launchkit` command line. Exit codes: 0 ok, 1 runtime failure (e.g. port busy), 2 bad usage or config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn, Sequence

from launchkit import __version__
from launchkit.config import DEMO_OPTIONS, ConfigError, DemoConfig, Option, env_defaults, env_name

EXIT_RUNTIME_ERROR, EXIT_USAGE = 1, 2


class _Parser(argparse.ArgumentParser):
    """Argparse that reports errors as a single line an operator can act on."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _argument_type(option: Option):
    def convert(text: str) -> Any:
        try:
            return option.parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = option.name  # argparse names the type in its messages
    return convert


def _add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...], from_env: dict[str, Any]) -> None:
    for option in options:
        default = from_env.get(option.attribute, option.default)
        shown = option.show(default).replace("%", "%%")
        help_text = f"{option.help} (env {env_name(option.name)}; default: {shown})"
        if option.is_flag:
            parser.add_argument(f"--{option.name}", action="store_true", default=default, help=help_text)
        else:
            parser.add_argument(
                f"--{option.name}", type=_argument_type(option), default=default,
                metavar=option.metavar, help=help_text,
            )


def build_parser(from_env: dict[str, Any]) -> argparse.ArgumentParser:
    """The CLI; `from_env` holds the values of LAUNCHKIT_* variables, which become the defaults."""
    parser = _Parser(
        prog="launchkit",
        description="Live-stream a press launch to a flash crowd and keep the servers up.",
        epilog="Every option also reads LAUNCHKIT_<OPTION> from the environment; a flag on the command line wins.",
    )
    parser.add_argument("--version", action="version", version=f"launchkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="all-in-one on this machine with a live test card",
        description="Run everything in one process: the test card is encoded once, packaged as HLS "
                    "and played on the landing page.",
    )
    _add_options(demo, DEMO_OPTIONS, from_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from_env = env_defaults(DEMO_OPTIONS, os.environ)
    except ConfigError as error:
        print(f"launchkit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(from_env)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        config = DemoConfig.from_values(vars(args))
    except ConfigError as error:
        print(f"launchkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    from launchkit.server import ListenError, run_demo

    try:
        run_demo(config)
    except ListenError as error:
        print(f"launchkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    return 0

