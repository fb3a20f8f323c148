"""What both daemons do on each signal: SPIRE's meaning where SPIRE has one, and never die silently.

- SIGTERM, SIGINT: stop gracefully (listeners closed, streams ended, sockets removed), exit 0.
- SIGUSR2: reopen ``log_file`` (logrotate's ``postrotate``), as SPIRE does.
- SIGUSR1: SPIRE's "reconfigure" signal; the daemon's ``reconfigure`` callback says what it does.
- SIGHUP: SPIRE exits on it; pyspire stays up, reopens ``log_file`` (a logrotate rule that sends
  HUP works too) and logs that other changes need a restart.
- Every other signal whose default action ends the process (SIGQUIT, SIGALRM, SIGPROF, the
  real-time signals...): logged by name, then a graceful stop with exit code 128 + the signal's
  number. SIGQUIT first writes every thread's stack to stderr, as Go's runtime does.
- Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) cannot be survived; ``faulthandler`` writes
  the stacks to stderr before the process dies. SIGKILL and SIGSTOP cannot be caught.

A stop is requested once but is often repeated (systemd's stop followed by its own timeout, an
operator pressing Ctrl-C twice). While the daemon is stopping a repeat only sets the same event
again. Once it has stopped, every handled signal goes straight from its handler to "ignore", so
a late repeat cannot turn a clean exit into death by signal. That is why the handlers are set
with ``signal.signal`` and handed to the loop, not registered with ``loop.add_signal_handler``:
removing a loop handler (and closing the loop does) puts the default action back first.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from types import FrameType

from pyspire.telemetry.logs import reopen_log_files

__all__ = ["StopRequest", "handle_signals"]

_log = logging.getLogger("pyspire.signals")

_GRACEFUL = (signal.SIGTERM, signal.SIGINT)
_OTHER_FATAL: tuple[int, ...] = tuple(
    getattr(signal, name)
    for name in (
        "SIGQUIT",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGPWR",
        "SIGSTKFLT",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGTRAP",
        "SIGSYS",
    )
    if hasattr(signal, name)
) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


class StopRequest:
    """Set when a signal asks the daemon to stop; ``exit_code`` says how the process should end."""

    def __init__(self) -> None:
        """Not yet requested."""
        self._event = asyncio.Event()
        self.signum: int | None = None

    def set(self, signum: int) -> None:
        """A stop was asked for by ``signum`` (the first signal decides the exit code)."""
        if self.signum is None:
            self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Until a stop is asked for."""
        await self._event.wait()

    @property
    def exit_code(self) -> int:
        """0 after SIGTERM or SIGINT (or no signal); 128 + the number after any other signal."""
        if self.signum is None or self.signum in _GRACEFUL:
            return 0
        return 128 + self.signum


def _reopen_logs(signum: int) -> None:
    try:
        reopened = reopen_log_files()
    except OSError as err:
        # The old file is still open: the reason goes there, as SPIRE writes it.
        _log.error("failed to rotate log after signal", extra={"error": str(err)})
        return
    if signum == signal.SIGHUP:
        _log.info(
            "SIGHUP received: the log file is reopened; other configuration changes take effect on restart",
            extra={"log_file_reopened": reopened},
        )
    elif reopened:
        _log.info("Log file reopened", extra={"signal": _name(signum)})


@contextlib.contextmanager
def handle_signals(reconfigure: Callable[[], None] | None = None) -> Iterator[StopRequest]:
    """Handle every signal as the module says, for the life of the ``with`` block; yields the stop request.

    ``reconfigure`` runs on SIGUSR1 (on the event loop; it must not block).
    """
    loop = asyncio.get_running_loop()
    stop = StopRequest()
    faulthandler.enable(file=sys.stderr, all_threads=True)

    def graceful(signum: int) -> None:
        if not stop.is_set():
            _log.info("Stop signal received", extra={"signal": _name(signum)})
        stop.set(signum)

    def unexpected(signum: int) -> None:
        if signum == getattr(signal, "SIGQUIT", None):
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        _log.warning("Signal received: stopping", extra={"signal": _name(signum)})
        stop.set(signum)

    def on_usr1() -> None:
        _log.info("Reconfigure signal received")
        if reconfigure is not None:
            reconfigure()

    handlers: dict[int, Callable[[], None]] = {
        signal.SIGUSR1: on_usr1,
        signal.SIGUSR2: lambda: _reopen_logs(signal.SIGUSR2),
        signal.SIGHUP: lambda: _reopen_logs(signal.SIGHUP),
    }
    for stopping in _GRACEFUL:
        handlers[stopping] = functools.partial(graceful, int(stopping))
    for fatal in _OTHER_FATAL:
        handlers[fatal] = functools.partial(unexpected, int(fatal))
    # The interpreter writes each caught signal's number to the wake-up socket; the loop reads them
    # and runs the handlers. The Python-level handler does nothing, so a burst of signals cannot
    # pile handlers on top of each other, and a signal caught by another thread while the main
    # one waits in epoll still wakes the loop.
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    loop.add_reader(wake_reader.fileno(), _dispatch, wake_reader, handlers)
    previous_wakeup = signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
    try:
        for signum in handlers:
            signal.signal(signum, _caught)
        yield stop
    finally:
        # Straight from the handler to "ignore", one signal at a time: the default action is never
        # in place, not even between two statements, so a repeated stop cannot kill the process.
        for signum in handlers:
            signal.signal(signum, signal.SIG_IGN)
        signal.set_wakeup_fd(previous_wakeup)
        loop.remove_reader(wake_reader.fileno())
        wake_reader.close()
        wake_writer.close()


def _caught(_signum: int, _frame: FrameType | None) -> None:
    """The interpreter-level handler: the signal's number is already on its way to the loop."""


def _dispatch(wake_reader: socket.socket, handlers: dict[int, Callable[[], None]]) -> None:
    received = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := wake_reader.recv(4096):
            received += chunk
    for signum in dict.fromkeys(received):  # a burst of one signal runs its handler once
        handler = handlers.get(signum)
        if handler is not None:
            handler()
