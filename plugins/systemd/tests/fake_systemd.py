"""Stands in for systemd's manager on a D-Bus bus: the part of ``org.freedesktop.systemd1`` the attestor calls.

Run as ``python fake_systemd.py <bus address> <units directory>``; prints ``ready`` once it owns
the name ``org.freedesktop.systemd1``. Like systemd, it knows a process's unit from the
process's cgroup (the v2 line of ``/proc/<pid>/cgroup``, else ``name=systemd``): the deepest
path segment that is a unit name (``system.slice/web.service`` is ``web.service``; the root
cgroup is ``-.slice``). It serves, as systemd documents them (org.freedesktop.systemd1(5)):

- ``Manager.GetUnitByPID(u) -> o`` on ``/org/freedesktop/systemd1``: the unit's object path,
  ``/org/freedesktop/systemd1/unit/<name>`` with every byte outside ``[A-Za-z0-9]`` escaped as
  ``_xx``; error ``org.freedesktop.systemd1.NoUnitForPID`` for a PID that is in no unit or gone;
- ``org.freedesktop.DBus.Properties.Get(s, s) -> v`` on a unit object, interface
  ``org.freedesktop.systemd1.Unit``: ``Id`` (s) and ``FragmentPath`` (s: the unit file in the
  units directory, empty when there is none, as for a transient scope).

Other calls get ``org.freedesktop.DBus.Error.UnknownMethod``/``UnknownObject``/``UnknownProperty``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jeepney import HeaderFields, Message, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"
UNIT_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".target", ".timer", ".swap")


def escape(name: str) -> str:
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"_{b:02x}" for b in name.encode()) or "_"


def unescape(label: str) -> str:
    out, index = bytearray(), 0
    while index < len(label):
        if label[index] == "_":
            out.append(int(label[index + 1 : index + 3], 16))
            index += 3
        else:
            out += label[index].encode()
            index += 1
    return out.decode()


def unit_of(pid: int) -> str | None:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths = dict(line.split(":", 2)[1:] for line in lines)
    path = paths.get("", "/")
    if path == "/" and "name=systemd" in paths:
        path = paths["name=systemd"]
    units = [segment for segment in path.split("/") if segment.endswith(UNIT_SUFFIXES)]
    return units[-1] if units else "-.slice"


def main(address: str, units: Path) -> None:
    connection = open_dbus_connection(bus=address)
    connection.send_and_get_reply(message_bus.RequestName(SYSTEMD, 4))  # DBUS_NAME_FLAG_DO_NOT_QUEUE
    print("ready", flush=True)
    while True:
        message = connection.receive()
        if message.header.message_type != MessageType.method_call:
            continue
        fields = message.header.fields
        path, interface, member = (
            fields.get(HeaderFields.path),
            fields.get(HeaderFields.interface),
            fields.get(HeaderFields.member),
        )
        connection.send(answer(message, path, interface, member, units))


def answer(message: Message, path: str | None, interface: str | None, member: str | None, units: Path) -> Message:
    if path == MANAGER_PATH and member == "GetUnitByPID" and interface in (None, f"{SYSTEMD}.Manager"):
        (pid,) = message.body
        unit = unit_of(pid)
        if unit is None:
            return new_error(
                message, f"{SYSTEMD}.NoUnitForPID", "s", (f"PID {pid} does not belong to any loaded unit.",)
            )
        return new_method_return(message, "o", (UNIT_PREFIX + escape(unit),))
    if path and path.startswith(UNIT_PREFIX) and interface == "org.freedesktop.DBus.Properties" and member == "Get":
        name = unescape(path[len(UNIT_PREFIX) :])
        wanted_interface, prop = message.body
        if not name.endswith(UNIT_SUFFIXES) and name != "-.slice":
            return new_error(message, "org.freedesktop.DBus.Error.UnknownObject", "s", (f"Unknown object '{path}'.",))
        fragment = units / name
        values = {"Id": name, "FragmentPath": str(fragment) if fragment.is_file() else ""}
        if wanted_interface != f"{SYSTEMD}.Unit" or prop not in values:
            return new_error(message, "org.freedesktop.DBus.Error.UnknownProperty", "s", (f"Unknown property {prop}",))
        return new_method_return(message, "v", (("s", values[prop]),))
    return new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"Unknown method {member}",))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
