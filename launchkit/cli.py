"""`launchkit` command line. Exit codes: 0 ok, 1 runtime failure (e.g. port busy), 2 bad usage or config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn, Sequence

from launchkit import __version__, control, plan
from launchkit.auth import TokenError, Tokens
from launchkit.config import (
    DEMO_OPTIONS,
    EDGE_ONLY_OPTIONS,
    EDGE_OPTIONS,
    ORIGIN_OPTIONS,
    Config,
    Option,
    env_defaults,
    env_name,
)
from launchkit.option_parsers import ConfigError
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.turn import TurnCredentials
from loadtests.rehearse import cli as rehearse

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


ROLES = {
    "demo": (DEMO_OPTIONS, "all-in-one on this machine with a live test card",
             "Run everything in one process: the test card is encoded once per rendition, packaged as HLS "
             "and played on the landing page."),
    "origin": (ORIGIN_OPTIONS, "production origin: ingest (WHIP, RTMP, SRT), encode, package, record",
               "The production origin: publishers connect over WHIP, RTMP or SRT; the program (with a slate "
               "while no one publishes) is encoded once per rendition, packaged as HLS and recorded for the replay. "
               "Tokens come from LAUNCHKIT_PUBLISH_TOKEN and LAUNCHKIT_OPS_TOKEN."),
    "edge": (EDGE_OPTIONS, "stateless edge: pull-through cache in front of the origin, scaled horizontally",
             "A stateless edge: serves the landing page and relays /hls and /replay from the origin (or another "
             "edge) with request coalescing, so the origin's load grows with the number of edges, not viewers."),
}


def build_parser(from_env: dict[str, Any]) -> argparse.ArgumentParser:
    """The CLI; `from_env` holds the values of LAUNCHKIT_* variables, which become the defaults."""
    parser = _Parser(
        prog="launchkit",
        description="Live-stream a press launch to a flash crowd and keep the servers up.",
        epilog="Every option also reads LAUNCHKIT_<OPTION> from the environment; a flag on the command line wins.",
    )
    parser.add_argument("--version", action="version", version=f"launchkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for role, (options, summary, description) in ROLES.items():
        _add_options(commands.add_parser(role, help=summary, description=description), options, from_env)
    control.add_parser(commands)
    plan.add_parser(commands)
    rehearse.add_parser(commands)
    return parser


def tokens_from_env(environ: dict[str, str] | os._Environ[str]) -> Tokens:
    try:
        return Tokens.from_env(environ)
    except TokenError as error:
        raise ConfigError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from_env = env_defaults(ORIGIN_OPTIONS + EDGE_ONLY_OPTIONS, os.environ)
        tokens = tokens_from_env(os.environ)
        ice = IceSettings.from_env(os.environ)
    except ConfigError as error:
        print(f"launchkit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(from_env)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "event":
        return control.run(args, tokens)
    if args.command == "plan":
        return plan.run(args, sys.argv[1:] if argv is None else list(argv))
    if args.command == "rehearse":
        return rehearse.run(args)
    if args.command == "edge":
        return _run_edge(args)
    options = ROLES[args.command][0]
    try:
        config = Config.for_role(args.command, {o.attribute: getattr(args, o.attribute) for o in options})
        TurnCredentials.from_env(config.turn_urls, config.turn_credential_ttl)  # a missing or weak secret: now
    except ConfigError as error:
        print(f"launchkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(config.log_level)
    from launchkit.origin.process import run
    from launchkit.serve.listening import ListenError

    try:
        run(config, tokens, ice)
    except ListenError as error:
        print(f"launchkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    return 0


def _run_edge(args: argparse.Namespace) -> int:
    from launchkit.edge.process import run_edge
    from launchkit.edge.settings import EdgeSettings
    from launchkit.serve.listening import ListenError

    try:
        settings = EdgeSettings(**{o.attribute: getattr(args, o.attribute) for o in EDGE_OPTIONS})
        TurnCredentials.from_env(settings.turn_urls, settings.turn_credential_ttl)
    except ConfigError as error:
        print(f"launchkit edge: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings.log_level)
    try:
        return run_edge(settings)
    except ListenError as error:
        print(f"launchkit edge: error: {error}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
