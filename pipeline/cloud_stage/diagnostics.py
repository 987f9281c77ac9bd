"""See inside a worker that seems stuck: ``kill -USR1 <pid>`` logs every asyncio task's stack.

A stalled stream (events in Kafka, no alerts) shows no error by itself: some task waits on
something forever. The dump names that await (file, line, code), which is what a person needs
to tell a stuck model call from a consumer that stopped fetching. Python's own
``faulthandler`` prints thread stacks only, and the worker's tasks share one thread - except
Faust's Kafka consumer, which runs aiokafka on an event loop of its own thread: a main-loop
task waiting in ``call_thread`` is waiting on that loop, so the dump also lists the tasks of
every other live event loop and every thread's current stack.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal
import sys
import threading
import traceback

log = logging.getLogger(__name__)

MAX_FRAMES = 12  # per task: enough to reach our code from Faust's generators


_FRAME_ATTRS = ("cr_frame", "ag_frame", "gi_frame")
_AWAIT_ATTRS = ("cr_await", "ag_await", "gi_yieldfrom")


def _unwrap(node: object) -> object:
    """``async for`` awaits an ``async_generator_asend`` that hides its generator: find it."""
    if type(node).__name__ in ("async_generator_asend", "async_generator_athrow"):
        return next((r for r in gc.get_referents(node) if hasattr(r, "ag_frame")), node)
    return node


def await_chain(coro: object) -> list[str]:
    """``file:line in function`` for each coroutine/generator in ``coro``'s await chain.

    ``Task.print_stack`` shows a suspended coroutine's own frame only; what it waits on is
    found by following ``cr_await`` (``ag_await``, ``gi_yieldfrom``) down the chain.
    """
    lines: list[str] = []
    node: object = coro
    while len(lines) < MAX_FRAMES:
        node = _unwrap(node)
        frame = next((f for a in _FRAME_ATTRS if (f := getattr(node, a, None)) is not None), None)
        if frame is None:
            lines.append(f"waits on {node!r}"[:300])
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        nxt = next((n for a in _AWAIT_ATTRS if (n := getattr(node, a, None)) is not None), None)
        if nxt is None:
            break
        node = nxt
    return lines


def task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Every live task of ``loop`` with the await chain it is suspended in, innermost last."""
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in tasks:
        out.write(f"--- {task.get_name()}\n")
        for line in await_chain(task.get_coro()):
            out.write(f"    {line}\n")
    return out.getvalue()


def other_loops(loop: asyncio.AbstractEventLoop) -> list[asyncio.AbstractEventLoop]:
    """Running event loops besides ``loop`` (e.g. Faust's consumer thread), found by the GC."""
    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o is not loop
            and o.is_running()]  # fmt: skip


def thread_stacks() -> str:
    """Every thread's current stack, innermost last (a loop blocked outside ``await`` shows here)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = io.StringIO()
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {names.get(ident, ident)}\n")
        for line in traceback.format_stack(frame)[-MAX_FRAMES:]:
            out.write(line)
    return out.getvalue()


def full_dump(loop: asyncio.AbstractEventLoop) -> str:
    """:func:`task_stacks` of ``loop`` and of every other running loop, then :func:`thread_stacks`.

    Reading another thread's loop from here is racy (its tasks may change while listed); for a
    stuck worker that is good enough, and nothing is modified."""
    parts = [task_stacks(loop)]
    for other in other_loops(loop):
        try:
            parts.append(f"=== other event loop {other!r}\n{task_stacks(other)}")
        except RuntimeError as exc:  # the set of tasks changed while listed
            parts.append(f"=== other event loop {other!r}: {exc}\n")
    parts.append(f"=== threads\n{thread_stacks()}")
    return "".join(parts)


def install_task_dump(loop: asyncio.AbstractEventLoop, sig: int = signal.SIGUSR1) -> None:
    """On ``sig``, log :func:`full_dump` at WARNING (to the worker's log)."""

    def dump() -> None:
        log.warning("task dump on signal %d:\n%s", sig, full_dump(loop))

    loop.add_signal_handler(sig, dump)
