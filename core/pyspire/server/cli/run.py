"""``run``, ``validate`` and ``healthcheck``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from pyspire.server.cli.common import DEFAULT_SOCKET

if TYPE_CHECKING:
    from pyspire.config.daemon_config import ServerConfig

__all__ = ["register"]

DEFAULT_CONFIG = "conf/server/server.conf"


def _config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-config", default=DEFAULT_CONFIG, help="Path to a SPIRE config file")
    parser.add_argument(
        "-expandEnv", dest="expand_env", action="store_true", help="Expand environment variables in the config file"
    )
    parser.add_argument("-bindAddress", dest="bind_address", help="IP address or DNS name of the server")
    parser.add_argument("-serverPort", dest="bind_port", help="Port number of the server")
    parser.add_argument("-socketPath", dest="socket_path", help="Path to bind the server API socket to")
    parser.add_argument("-trustDomain", dest="trust_domain", help="The trust domain that this server belongs to")
    parser.add_argument("-dataDir", dest="data_dir", help="A directory the server can use for its runtime data")
    parser.add_argument("-logFile", dest="log_file", help="File to write logs to")
    parser.add_argument("-logFormat", dest="log_format", help="'text' or 'json'")
    parser.add_argument("-logLevel", dest="log_level", help="'debug', 'info', 'warn', or 'error'")
    parser.add_argument(
        "-logSourceLocation",
        dest="log_source_location",
        action="store_const",
        const=True,
        help="Include source file, line number and function name in log lines",
    )


_OVERRIDES = (
    "bind_address",
    "bind_port",
    "socket_path",
    "trust_domain",
    "data_dir",
    "log_file",
    "log_format",
    "log_level",
    "log_source_location",
)


def _load(args: argparse.Namespace) -> ServerConfig:
    # The config schema and the plugin catalogue load with the verbs that read a config file,
    # not with every CLI call.
    from pyspire.config.daemon_config import load_server_config  # noqa: PLC0415

    overrides: dict[str, Any] = {key: getattr(args, key) for key in _OVERRIDES if getattr(args, key) is not None}
    return load_server_config(Path(args.config), expand_env=args.expand_env, overrides=overrides)


def _run(args: argparse.Namespace) -> int:
    from pyspire.daemon_cli import run_daemon  # noqa: PLC0415 - keeps the CLI quick for admin verbs
    from pyspire.server.daemon import run_server  # noqa: PLC0415

    return run_daemon(lambda: _load(args), lambda config: config.server, run_server, "server")


def _validate(args: argparse.Namespace) -> int:
    from pyspire.daemon_cli import validate_config  # noqa: PLC0415 - keeps the CLI quick for admin verbs

    return validate_config(lambda: _load(args), lambda config: config.server, "server")


def _healthcheck(args: argparse.Namespace) -> int:
    async def check() -> str:
        channel = Channel(path=args.socket_path)
        try:
            reply = await HealthStub(channel).Check(HealthCheckRequest(), timeout=5)
        finally:
            channel.close()
        return HealthCheckResponse.ServingStatus.Name(reply.status)

    if args.verbose:
        print("Checking server health...")
    try:
        status = asyncio.run(check())
    except (OSError, ConnectionError) as err:
        print(f"Server is unhealthy: unable to connect to the server at {args.socket_path}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        print(f"Server is unhealthy: {err}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"Server is unhealthy: status {status}", file=sys.stderr)
        return 1
    print("Server is healthy.")
    return 0


def register(commands: Any) -> None:
    """Add the commands to the parser."""
    run = commands.add_parser("run", help="Runs the server")
    _config_flags(run)
    run.set_defaults(handler=_run)
    validate = commands.add_parser("validate", help="Validates a SPIRE server configuration file")
    _config_flags(validate)
    validate.set_defaults(handler=_validate)
    health = commands.add_parser("healthcheck", help="Determines server health status")
    health.add_argument("-socketPath", dest="socket_path", default=DEFAULT_SOCKET)
    health.add_argument("-shallow", action="store_true", help="Perform a less stringent health check")
    health.add_argument("-verbose", action="store_true", help="Print verbose information")
    health.set_defaults(handler=_healthcheck)
