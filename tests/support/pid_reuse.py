"""Make a PID be reused on purpose: start a program under the PID a process that exited had.

Linux lets a process with CAP_SYS_ADMIN (root, here) ask ``clone3`` for the PID of its child
(``set_tid``, Linux 5.5). The asking is done by a small single-threaded helper (this file run
as a script): it clones, the child executes the program at once, and the helper stays its
parent. Nothing is guessed or cycled, so the reuse is exact and immediate.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import subprocess
import sys

_SYS_CLONE3 = 435  # the same number on x86-64 and arm64
_CLONE_ARGS = struct.Struct("11Q")  # struct clone_args up to cgroup (CLONE_ARGS_SIZE_VER2)


class PidTaken(Exception):
    """The PID is in use again (by someone else): try with another."""


def can_reuse_pids() -> bool:
    """Whether this process may choose its children's PIDs."""
    return os.geteuid() == 0 and sys.platform == "linux"


def start_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[str]:
    """Run ``argv`` as process ``pid`` (which must be free); the Popen is of the helper, its parent."""
    helper = subprocess.Popen(
        [sys.executable, __file__, str(pid), *argv], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert helper.stdout is not None
    answer = helper.stdout.readline().strip()
    if answer != str(pid):
        helper.wait()
        raise PidTaken(f"cannot start {argv[0]} as PID {pid}: {answer or 'the helper failed'}")
    return helper


def _clone_with_pid(pid: int, argv: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    wanted = (ctypes.c_int * 1)(pid)
    args = _CLONE_ARGS.pack(0, 0, 0, 0, signal.SIGCHLD, 0, 0, 0, ctypes.addressof(wanted), 1, 0)
    buffer = ctypes.create_string_buffer(args, len(args))
    child = libc.syscall(ctypes.c_long(_SYS_CLONE3), buffer, ctypes.c_size_t(len(args)))
    if child == 0:
        os.execv(argv[0], argv)
    if child < 0:
        print(os.strerror(ctypes.get_errno()), flush=True)
        sys.exit(1)
    print(child, flush=True)
    os.waitpid(child, 0)


if __name__ == "__main__":
    _clone_with_pid(int(sys.argv[1]), sys.argv[2:])
