"""See inside a worker that seems stuck: ``kill -USR1 <pid>`` logs every asyncio task's stack.

A stalled stream (events in Kafka, no alerts) shows no error by itself: some task waits on
something forever. The dump names that await (file, line, code), which is what a person needs
to tell a stuck model call from a consumer that stopped fetching. Python's own
``faulthandler`` prints thread stacks only, and every task of the worker shares one thread.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal

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


def install_task_dump(loop: asyncio.AbstractEventLoop, sig: int = signal.SIGUSR1) -> None:
    """On ``sig``, log :func:`task_stacks` at WARNING (to the worker's log)."""

    def dump() -> None:
        log.warning("task dump on signal %d:\n%s", sig, task_stacks(loop))

    loop.add_signal_handler(sig, dump)
