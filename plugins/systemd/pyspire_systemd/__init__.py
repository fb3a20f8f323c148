"""WorkloadAttestor ``systemd``: the systemd unit a calling process belongs to, asked over D-Bus.

systemd's manager answers ``org.freedesktop.systemd1.Manager.GetUnitByPID(u pid)`` with the
object path of the unit whose cgroup holds the process; that unit's ``Id`` and
``FragmentPath`` properties (interface ``org.freedesktop.systemd1.Unit``) become the
selectors ``id:<unit>`` and ``fragment_path:<unit file>``, as in SPIRE. The system bus is the
one ``DBUS_SYSTEM_BUS_ADDRESS`` names, or ``/var/run/dbus/system_bus_socket``; the plugin has
no configuration (SPIRE's takes none). One connection is kept and shared by the attesting
threads; when the bus drops it, the call connects again.

Anything short of both properties — no bus, systemd not answering, an error reply, a property
that is not a string — fails attestation with the reason, and the workload gets no identity.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, Message, MessageType, Properties, new_method_call
from jeepney.io.blocking import DBusConnection, open_dbus_connection
from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, NotFound, Unavailable

__all__ = ["SystemdWorkloadAttestor"]

SYSTEMD = "org.freedesktop.systemd1"
MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name=SYSTEMD, interface=f"{SYSTEMD}.Manager")
UNIT_INTERFACE = f"{SYSTEMD}.Unit"
DBUS_TIMEOUT = 10.0
"""Seconds a D-Bus call may take before attestation fails."""

_NO_UNIT = (f"{SYSTEMD}.NoUnitForPID", f"{SYSTEMD}.NoSuchProcess", "org.freedesktop.DBus.Error.UnixProcessIdUnknown")
"""Error replies meaning the process is in no unit (or gone): NotFound rather than Unavailable."""


@dataclass(frozen=True)
class SystemdConfig:
    """``plugin_data`` of ``WorkloadAttestor "systemd"``: none (every key is refused)."""


class _Bus:
    """One connection to the system bus, opened on first use and again after it drops.

    Calls take turns on the connection (each is a round trip of well under a millisecond to
    the bus), so no receiver thread is left behind to die noisily when the bus goes away.
    Every call the plugin makes is a read, so a call whose connection turns out to be gone
    (the bus restarted since the last one) is sent once more on a new connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: DBusConnection | None = None

    def call(self, message: Message, what: str) -> tuple[Any, ...]:
        """Send ``message`` and return the reply's body; ``what`` names the call in errors."""
        with self._lock:
            reply = self._round_trip(message, what)
        if reply.header.message_type == MessageType.error:
            name = reply.header.fields.get(HeaderFields.error_name, "")
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            error = NotFound if name in _NO_UNIT else Unavailable
            raise error(f"{what}: {name}: {text}".rstrip(": "))
        return tuple(reply.body)

    def _round_trip(self, message: Message, what: str) -> Message:
        for attempt in range(2):
            fresh = self._connection is None
            if self._connection is None:
                try:
                    self._connection = open_dbus_connection(bus="SYSTEM")
                except (OSError, ValueError, RuntimeError, TimeoutError) as err:
                    raise Unavailable(f"failed to open dbus connection: {err or type(err).__name__}") from None
            try:
                return self._connection.send_and_get_reply(message, timeout=DBUS_TIMEOUT)
            except TimeoutError:
                self._close()
                raise Unavailable(f"{what}: no answer over D-Bus within {DBUS_TIMEOUT:g} s") from None
            except OSError as err:
                self._close()
                if fresh or attempt:
                    raise Unavailable(f"{what}: the D-Bus connection failed: {err}") from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class SystemdWorkloadAttestor:
    """Selectors ``id`` and ``fragment_path`` of the caller's systemd unit."""

    def __init__(self) -> None:
        self._bus = _Bus()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(SystemdConfig, plugin_data)

    @hookimpl
    def close(self) -> None:
        self._bus.close()

    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        if not 0 < pid < 2**32:
            raise Internal(f"invalid value for PID: {pid}")
        what = f"failed to get unit by pid {pid}"
        answer = self._bus.call(new_method_call(MANAGER, "GetUnitByPID", "u", (pid,)), what)
        if len(answer) != 1 or not isinstance(answer[0], str):
            raise Internal(f"{what}: the answer is not an object path: {answer!r}")
        unit = DBusAddress(answer[0], bus_name=SYSTEMD, interface=UNIT_INTERFACE)
        return [f"id:{self._string(unit, 'Id')}", f"fragment_path:{self._string(unit, 'FragmentPath')}"]

    def _string(self, unit: DBusAddress, name: str) -> str:
        answer = self._bus.call(Properties(unit).get(name), f"error getting value for {name}")
        variant = answer[0] if len(answer) == 1 else None
        if not (isinstance(variant, tuple) and len(variant) == 2 and variant[0] == "s" and isinstance(variant[1], str)):
            raise Internal(f"Returned value for {name} was not a string: {answer!r}")
        return variant[1]
