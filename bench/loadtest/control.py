"""How the orchestrator drives its helper processes: JSON lines over the child's stdin and stdout.

The parent writes one command per line (`{"id": 7, "cmd": "run", ...}`); the child answers each with
`{"id": 7, "ok": true, ...}` or `{"id": 7, "error": "..."}`, and may send unsolicited reports in
between (`{"type": "tick", ...}`). The child's stdout carries nothing else: `child_channel` moves
`sys.stdout` to stderr, which goes to a log file the orchestrator shows when something fails.

No stray processes: every child dies with its parent (PR_SET_PDEATHSIG, so even a SIGKILLed
orchestrator leaves nothing running), a child exits when its stdin closes, and `Child.stop` ends it
(terminate, then kill) in the orchestrator's `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[Message | None]]
_PR_SET_PDEATHSIG = 1
# Views of 100,000 endpoints travel as one line.
LINE_LIMIT = 1 << 30


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (safe to call in a preexec_fn)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ControlError(RuntimeError):
    """A helper process failed a command, died, or did not answer in time."""


class Child:
    """One helper process, from the parent's side."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.pid = process.pid
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self.on_report: Callable[[Child, Message], None] = lambda child, message: None
        self._reader = asyncio.create_task(self._read(), name=f"{name} reader")

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Child:
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=LINE_LIMIT,
                preexec_fn=die_with_parent,
                env={**os.environ, **(env or {})},
            )
        return cls(name, process, log_path)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        error: BaseException | None = None
        try:
            while line := await self.process.stdout.readline():
                message: Message = json.loads(line)
                if "id" in message:
                    future = self._pending.pop(int(message["id"]), None)
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    self.on_report(self, message)
        except Exception as raised:  # a broken line: report it to every waiter
            error = raised
        failure = ControlError(f"{self.name} exited ({error or 'end of output'}); its log:\n{self.log_tail()}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()

    async def call(self, cmd: str, *, within: float = 60.0, **params: Any) -> Message:
        """Send one command and wait up to `within` seconds for its answer; ControlError if it fails or is late."""
        if self._reader.done():
            raise ControlError(f"{self.name} is not running; its log:\n{self.log_tail()}")
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": ident, "cmd": cmd, **params}).encode() + b"\n")
        try:
            await self.process.stdin.drain()
            async with asyncio.timeout(within):
                reply = await future
        except TimeoutError:
            raise ControlError(f"{self.name} did not answer {cmd!r} within {within:.0f} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ControlError(f"{self.name} is gone; its log:\n{self.log_tail()}") from None
        finally:
            self._pending.pop(ident, None)
        if "error" in reply:
            raise ControlError(f"{self.name}: {cmd} failed: {reply['error']}")
        return reply

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self, grace: float = 5.0) -> None:
        """Close stdin (the child exits by itself), then terminate, then kill; always reaps."""
        process = self.process
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(Exception):
                process.stdin.close()
        for action in (None, process.terminate, process.kill):
            if process.returncode is not None:
                break
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class ChildChannel:
    """The child's side: commands from stdin, answers and reports on the original stdout."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def send(self, message: Message) -> None:
        self._out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self._out.flush()

    async def serve(self, handler: Handler) -> None:
        """Answer commands until stdin closes or a command answers {"exit": true}.

        Each command runs as its own task, so a long one (a timed run) does not hold up a quick one.
        """
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        done = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def answer(ident: object, command: Message) -> None:
            try:
                reply = await handler(command) or {}
            except Exception as error:
                print(f"command {command.get('cmd')!r} failed: {error!r}", file=sys.stderr, flush=True)
                self.send({"id": ident, "error": f"{type(error).__name__}: {error}"})
                return
            self.send({"id": ident, "ok": True, **reply})
            if reply.get("exit"):
                done.set()

        async def read() -> None:
            while line := await reader.readline():
                command: Message = json.loads(line)
                task = asyncio.create_task(answer(command.pop("id", None), command))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            done.set()

        reading = asyncio.create_task(read())
        await done.wait()
        reading.cancel()
        for task in list(tasks):
            task.cancel()


def child_channel() -> ChildChannel:
    """Set up a child process: die with the parent; stdout reserved for the protocol."""
    die_with_parent()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout = sys.stderr
    return ChildChannel(out)
