"""``pyspire-oidc-discovery``: SPIRE's ``oidc-discovery-provider`` command line.

Flags as SPIRE's: ``-config`` (default ``oidc-discovery-provider.conf``), ``-expandEnv``
(replace ``$VAR`` / ``${VAR}`` in the file first), ``-version``. A bad flag exits 2 with the
usage (Go's ``flag`` package does the same); a bad config file, or a provider that cannot
start, prints ``Error: <what, naming the key or the file>`` and exits 1. There is no
traceback on any of these paths.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspire.config import ConfigError
from pyspire.telemetry.logs import configure_logging

from pyspire_oidc_discovery.config import DEFAULT_CONFIG_PATH, load_config
from pyspire_oidc_discovery.daemon import StartupError, serve

__all__ = ["main"]

_TRUE = ("1", "t", "true")
_FALSE = ("0", "f", "false")


def _go_bool(text: str) -> bool:
    """A boolean flag's value as Go's ``strconv.ParseBool`` reads it (``-expandEnv=false``)."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f'invalid boolean value "{text}"')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyspire-oidc-discovery",
        description="Serves the trust domain's OIDC discovery document and JWKS (SPIRE's OIDC Discovery Provider).",
    )
    parser.add_argument("-config", "--config", default=str(DEFAULT_CONFIG_PATH), help="configuration file")
    parser.add_argument(
        "-expandEnv",
        "--expandEnv",
        nargs="?",
        const=True,
        default=False,
        type=_go_bool,
        help="expand environment variables in config file",
    )
    parser.add_argument(
        "-version", "--version", nargs="?", const=True, default=False, type=_go_bool, help="print version"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the provider with ``argv`` (the process's arguments when None); the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown_flags = [arg for arg in extra if arg.startswith("-")]
    if unknown_flags:
        parser.error(f"flag provided but not defined: {unknown_flags[0]}")
    if extra:
        print(f"Error: unexpected arguments: {' '.join(extra)}", file=sys.stderr)
        parser.print_usage(sys.stderr)
        return 1
    if args.version:
        print(importlib.metadata.version("pyspire-oidc-discovery"))
        return 0
    try:
        config = load_config(Path(args.config), expand_env=args.expandEnv)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    try:
        log_file = Path(config.log_path) if config.log_path else None
        configure_logging(config.log_level.value, config.log_format.lower(), log_file)
    except OSError as err:
        print(f"Error: cannot open log_path {config.log_path}: {err.strerror}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(serve(config))
    except StartupError as err:
        logging.getLogger("pyspire.oidc_discovery").error("%s", err)
        print(f"Error: {err}", file=sys.stderr)
        return 1


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
