"""Timed reward calls in a worker process that can be killed.

:func:`~llm_gym.rewards.calling.call_reward_fn` with ``timeout=seconds`` sends the call here. The call runs
in a small pool of persistent worker processes (started with the ``"forkserver"`` method, or ``"spawn"``
where that is missing, so the caller's torch threads are never forked): a worker is started on the first timed call and reused by later ones. When a call overruns
its limit, the worker is killed (``SIGKILL``, which also stops a call stuck inside one C function that
holds the GIL) and a replacement is started at once, in the background, for the next call.

Inside the worker the function runs in the process's **main thread**, so ``signal``-based time limits,
such as math-verify's, keep working.

The function and its arguments travel to the worker with :mod:`pickle`: a module-level function (or a
``functools.partial`` of one) is sent by reference, cheaply. What cannot be sent (a lambda, a closure, a
bound method of an object that cannot be pickled) or should not be (an object holding a torch model)
raises :class:`NotShippable`, and the caller falls back to a thread.

Protocol of one worker (messages are pickled tuples on a duplex pipe)::

    worker -> parent  ("ready",)                       once, after start-up
    parent -> worker  pickled (fn, args, kwargs)
    worker -> parent  ("loaded",) or ("unloadable", text)
    worker -> parent  ("ok", value) or ("error", exception)
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import pickle
import signal
import sys
import threading
import traceback
import types
from typing import Any

__all__ = ["LOAD_TIMEOUT", "NotShippable", "WorkerDied", "WorkerTimeout", "in_worker", "run_in_worker"]

#: Seconds allowed for a worker to start (it imports ``llm_gym`` and torch, about 3 s on a busy 2-core
#: machine) and to unpickle a call (which imports the function's module). Not counted against the
#: call's own timeout.
LOAD_TIMEOUT = 120.0

#: Idle workers kept for reuse; more are started only while several threads make timed calls at once.
_MAX_IDLE = 2

_IN_WORKER = False
_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


class NotShippable(Exception):
    """The function or its arguments cannot (or should not) be sent to a worker process.

    Attributes:
        reason: Why, in words, for the fallback warning.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkerTimeout(Exception):
    """The call did not return within its timeout; the worker running it has been killed."""


class WorkerDied(Exception):
    """The worker process ended (crashed, was killed from outside, or failed to start) during a call."""


class RemoteError(Exception):
    """Stands in for an exception raised in the worker that could not be pickled back.

    Attributes:
        remote_type_name: The class name of the original exception.
    """

    def __init__(self, remote_type_name: str, message: str) -> None:
        super().__init__(message)
        self.remote_type_name = remote_type_name

    def __reduce__(self) -> tuple:
        """Pickle with both arguments (``Exception``'s default passes only ``args``, the message)."""
        return (type(self), (self.remote_type_name, str(self)))


def in_worker() -> bool:
    """True inside a reward worker process (nested timed calls then run directly: the outer call is timed)."""
    return _IN_WORKER


# --------------------------------------------------------------------------------------------- worker side


def _serve(conn: Any) -> None:
    """Main loop of a worker process: receive a call, run it in this (main) thread, send the result back."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it kills us if needed
    conn.send(("ready",))
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe or exited
        try:
            fn, args, kwargs = pickle.loads(payload)
        except BaseException as exc:  # noqa: BLE001 - e.g. a function defined in `python -c`'s __main__
            conn.send(("unloadable", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("loaded",))
        try:
            message: tuple = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            _add_note(exc, "Raised in the llm-gym reward worker process:\n" + traceback.format_exc())
            message = ("error", exc)
        try:
            data = pickle.dumps(message, protocol=_PICKLE_PROTOCOL)
            pickle.loads(data)  # an exception class with an unusual __init__ pickles but does not unpickle
        except BaseException as exc:  # noqa: BLE001
            if message[0] == "ok":
                err = RemoteError(type(exc).__name__,
                                  f"its return value cannot be pickled back from the worker process ({exc})")
            else:
                err = RemoteError(type(message[1]).__name__, str(message[1]))
            data = pickle.dumps(("error", err), protocol=_PICKLE_PROTOCOL)
        conn.send_bytes(data)


def _add_note(exc: BaseException, note: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python >= 3.11
    if add_note is not None:
        add_note(note)


# --------------------------------------------------------------------------------------------- parent side


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self) -> None:
        ctx = _context()
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_serve, args=(child_conn,), name="llm-gym-reward-worker", daemon=True)
        self.process.start()
        child_conn.close()
        self.ready = False
        _LIVE.add(self)

    def _receive(self, seconds: float | None) -> Any:
        """Next message, or raise WorkerTimeout after ``seconds`` / WorkerDied if the process ended."""
        if not self.conn.poll(seconds):
            raise WorkerTimeout
        try:
            return pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.process.join(1.0)
            raise WorkerDied(f"exit code {self.process.exitcode}") from None

    def call(self, payload: bytes, timeout: float) -> Any:
        """Run one pickled call; return its value or raise its exception.

        Raises:
            WorkerTimeout: the call took longer than ``timeout`` (start-up and unpickling not counted).
            WorkerDied: the process ended, or did not start / unpickle within :data:`LOAD_TIMEOUT`.
            NotShippable: the worker could not unpickle the call.
        """
        try:
            if not self.ready:
                self._receive(LOAD_TIMEOUT)  # ("ready",)
                self.ready = True
            self.conn.send_bytes(payload)
            reply = self._receive(LOAD_TIMEOUT)
        except WorkerTimeout:
            raise WorkerDied(f"did not start or load the function within {LOAD_TIMEOUT:g} s") from None
        except OSError:  # broken pipe: the process is gone
            self.process.join(1.0)
            raise WorkerDied(f"exit code {self.process.exitcode}") from None
        if reply[0] == "unloadable":
            raise NotShippable(f"the worker process cannot unpickle it ({reply[1]})")
        status, value = self._receive(timeout)
        if status == "error":
            raise value
        return value

    def kill(self) -> None:
        _LIVE.discard(self)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(1.0)
        self.conn.close()

    def close(self) -> None:
        """Stop an idle worker politely (closing the pipe ends its loop), then make sure it is gone."""
        _LIVE.discard(self)
        self.conn.close()
        self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)


_CONTEXT: Any = None


def _context() -> Any:
    """The multiprocessing context for workers: "forkserver" where available, else "spawn".

    Neither forks the calling process (forking a process that runs torch threads can deadlock). The fork
    server preloads this module (hence torch), so a replacement worker starts in a fraction of a second
    instead of the ~2-3 s a spawned interpreter needs to import ``llm_gym``. (The preload list is global to
    the fork server; it only takes effect if the fork server is not running yet.)
    """
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload(["__main__", __name__])
        else:
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


_LOCK = threading.Lock()
_IDLE: list[_Worker] = []
_LIVE: set[_Worker] = set()


def _acquire() -> _Worker:
    with _LOCK:
        while _IDLE:
            worker = _IDLE.pop()
            if worker.process.is_alive():
                return worker
            worker.kill()  # died while idle (killed from outside): clean up, try the next
        return _Worker()


def _release(worker: _Worker) -> None:
    with _LOCK:
        if len(_IDLE) < _MAX_IDLE:
            _IDLE.append(worker)
            return
    worker.close()


def _replace(worker: _Worker) -> None:
    """Kill ``worker`` and, if no idle worker is left, start a replacement now so it is warm for the next call."""
    worker.kill()
    with _LOCK:
        if not _IDLE:
            _IDLE.append(_Worker())


@atexit.register
def _shutdown() -> None:
    with _LOCK:
        workers = list(_LIVE)
        _IDLE.clear()
    for worker in workers:
        worker.kill()


def _holds_torch_model(obj: Any, depth: int = 3) -> bool:
    """True when ``obj`` is, or shallowly holds, a ``torch.nn.Module`` (a reward model)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    seen: set[int] = set()

    def visit(o: Any, d: int) -> bool:
        if id(o) in seen or d < 0:
            return False
        seen.add(id(o))
        if isinstance(o, torch.nn.Module):
            return True
        if isinstance(o, (types.ModuleType, type)):
            return False
        children: list[Any] = []
        if isinstance(o, functools.partial):
            children = [o.func, *o.args, *o.keywords.values()]
        elif isinstance(o, dict):
            children = list(o.values())
        elif isinstance(o, (list, tuple)):
            children = list(o)
        else:
            if getattr(o, "__self__", None) is not None:
                children.append(o.__self__)  # bound method
            attrs = getattr(o, "__dict__", None)
            if isinstance(attrs, dict):
                children.extend(attrs.values())
        return any(visit(c, d - 1) for c in children)

    return visit(obj, depth)


def pickled_call(fn: Any, args: tuple, kwargs: dict[str, Any]) -> bytes:
    """Pickle ``(fn, args, kwargs)`` for a worker.

    Raises:
        NotShippable: ``fn`` holds a torch model, or the call cannot be pickled.
    """
    if _holds_torch_model(fn):
        raise NotShippable("it holds a torch model, which should not be copied to another process on every "
                           "call (nor moved off its device)")
    try:
        return pickle.dumps((fn, args, kwargs), protocol=_PICKLE_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - PicklingError, AttributeError, TypeError, ...
        raise NotShippable(f"it cannot be pickled ({type(exc).__name__}: {exc})") from None


def run_in_worker(fn: Any, args: tuple, kwargs: dict[str, Any], timeout: float) -> Any:
    """Run ``fn(*args, **kwargs)`` in a worker process, killing the worker if it takes over ``timeout`` s.

    The first call (and the first after a kill) waits for a worker to start, up to :data:`LOAD_TIMEOUT`;
    only the call itself is timed.

    Returns:
        What ``fn`` returned (pickled back).

    Raises:
        NotShippable: The call cannot be sent to a worker (nothing was run); run it another way.
        WorkerTimeout: It did not return in time; the worker was killed and a replacement started.
        WorkerDied: The worker process ended during the call (it is replaced).
        Exception: Whatever ``fn`` raised in the worker.
    """
    payload = pickled_call(fn, args, kwargs)
    worker = _acquire()
    finished = False
    try:
        result = worker.call(payload, timeout)
        finished = True
        return result
    except (WorkerTimeout, WorkerDied, KeyboardInterrupt):
        raise  # the worker is stuck, dead or mid-call: replaced below
    except BaseException:
        finished = True  # fn raised (or could not be unpickled there); the worker is fine
        raise
    finally:
        if finished:
            _release(worker)
        else:
            _replace(worker)
