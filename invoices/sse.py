"""Server-Sent Events: a run's stream chunks written to an HTTP response.

Each chunk becomes ``id: <index>`` + ``data: <json>`` and is written as soon
as the engine hands it over. A comment line keeps idle connections alive. A
write that cannot complete within ``write_timeout`` (a client that stopped
reading) drops the connection, so a stalled client holds at most the socket
buffers. ``SseHub`` tracks the open responses so the app can end them all
at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from aiohttp import web

from durable import DurableError, Run, RunCancelled

from .workflow import is_terminal_event

__all__ = ["SseHub", "format_event", "stream_run"]

log = logging.getLogger("invoices.sse")

KEEPALIVE = b": keep-alive\n\n"
#: The kernel send buffer of an event stream. Left alone it grows to megabytes on
#: loopback, enough to swallow a whole batch's events, so writes to a client that
#: stopped reading would never block and the write timeout would never fire.
SEND_BUFFER = 64 * 1024
#: How long a terminal event may wait for its run's final status to be committed.
TERMINAL_STATUS_WAIT = 5.0


def format_event(index: int, data: bytes) -> bytes:
    """One SSE event; ``data`` is one line of JSON (orjson never emits newlines)."""
    return b"id: %d\ndata: %s\n\n" % (index, data)


class _ClientGone(Exception):
    """The client disconnected or stopped reading."""


class SseHub:
    """The open SSE responses of an app, so that shutdown can end them."""

    def __init__(self, *, keepalive: float = 15.0, write_timeout: float = 30.0) -> None:
        self.keepalive = keepalive
        self.write_timeout = write_timeout
        self._pumps: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def __len__(self) -> int:
        return len(self._pumps)

    def _add(self, task: asyncio.Task[None]) -> None:
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def close(self, timeout: float = 2.0) -> None:
        """Refuse new streams and end the open ones; idempotent."""
        self._closing = True
        pumps = list(self._pumps)
        for task in pumps:
            task.cancel()
        if pumps:
            await asyncio.wait(pumps, timeout=timeout)


class _Writer:
    """Writes events; the watchdog drops the connection when a write hangs.

    Most writes return at once (aiohttp only waits when its buffer is over
    64 KiB), so instead of a timeout around every write the watchdog looks at
    how long the current write has been waiting.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self._response = response
        self._loop = asyncio.get_running_loop()
        self.last_write = self._loop.time()
        self.waiting_since: float | None = None
        self.gone = False

    async def send(self, data: bytes) -> None:
        self.waiting_since = self._loop.time()
        try:
            await self._response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            # ConnectionResetError when the peer left; RuntimeError when the
            # transport is already closed (by the watchdog, say).
            self.gone = True
            raise _ClientGone(str(exc)) from None
        finally:
            self.waiting_since = None
        self.last_write = self._loop.time()

    def drop(self) -> None:
        """Close the connection: a stalled client must not hold buffers."""
        self.gone = True
        transport = self.request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Reset rather than FIN: the kernel then frees the unread buffer at once.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # abort(), not close(): close() would wait to flush the buffer
            # that this client is not reading.
            transport.abort()


async def _watchdog(writer: _Writer, hub: SseHub, pump: asyncio.Task[None]) -> None:
    """Keep-alive comments when idle; drop clients that left or stopped reading.

    aiohttp does not cancel handlers when their client disconnects, and a GET
    has no body whose reader would fail, so the transport is checked every
    second; without this a vanished client would hold its subscription until
    the next write.
    """
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(min(1.0, hub.keepalive, hub.write_timeout))
        transport = writer.request.transport
        if transport is None or transport.is_closing():
            writer.gone = True
            pump.cancel()
            return
        now = loop.time()
        if writer.waiting_since is not None:
            if now - writer.waiting_since >= hub.write_timeout:
                writer.drop()
                pump.cancel()
                return
            continue
        if now - writer.last_write < hub.keepalive:
            continue
        try:
            async with asyncio.timeout(hub.write_timeout):
                await writer.send(KEEPALIVE)
        except (_ClientGone, TimeoutError):
            writer.drop()
            pump.cancel()
            return


async def _pump(run: Run, start_index: int, writer: _Writer, hub: SseHub) -> None:
    pump = asyncio.current_task()
    assert pump is not None
    watchdog = asyncio.create_task(_watchdog(writer, hub, pump))
    chunks = run.chunks(start_index)
    try:
        async for chunk in chunks:
            if is_terminal_event(chunk.data):
                # The workflow writes its last event just before it returns; hold the
                # event until the run's final status is committed, so a client that
                # reacts to it with GET /api/status already sees how the run ended.
                with contextlib.suppress(DurableError, RunCancelled, TimeoutError):
                    await run.result(timeout=TERMINAL_STATUS_WAIT)
            await writer.send(format_event(chunk.index, chunk.data))
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def stream_run(request: web.Request, run: Run, start_index: int, hub: SseHub) -> web.StreamResponse:
    """Write ``run``'s stream from ``start_index`` as SSE until the run ends.

    The caller has checked that the run exists, so errors before this point
    are still plain JSON responses.
    """
    response = await _open_event_stream(request)
    writer = _Writer(request, response)
    await _pump_in_hub(run, start_index, writer, hub)
    if writer.gone:
        writer.drop()
    else:
        await _end_stream(response, writer, hub)
    return response


async def _open_event_stream(request: web.Request) -> web.StreamResponse:
    """Send the headers of an event stream, on a connection of its own with a small send buffer."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    # One stream per connection: when it ends the connection closes, so a
    # client that never read what was sent does not stay as an idle keep-alive.
    response.force_close()
    await response.prepare(request)
    _limit_send_buffer(request)
    return response


def _limit_send_buffer(request: web.Request) -> None:
    """Shrink the connection's kernel send buffer to ``SEND_BUFFER``, so that writes to a stalled client wait."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


async def _pump_in_hub(run: Run, start_index: int, writer: _Writer, hub: SseHub) -> None:
    """Pump the stream in a task that shutdown can end, until it ends; ``writer.gone`` when it broke off."""
    pump = asyncio.create_task(_pump(run, start_index, writer, hub))
    hub._add(pump)
    try:
        # wait() rather than awaiting the task: a pump cancelled by shutdown
        # or by its watchdog is a normal end, not a cancellation of this handler.
        await asyncio.wait({pump})
    finally:
        if not pump.done():  # this handler itself was cancelled
            pump.cancel()
    error = None if pump.cancelled() else pump.exception()
    if error is not None:
        if not isinstance(error, _ClientGone):
            log.error("SSE stream of run %s failed", run.run_id, exc_info=error)
        writer.gone = True


async def _end_stream(response: web.StreamResponse, writer: _Writer, hub: SseHub) -> None:
    """End the response (its last chunk), then let the client take the rest or be dropped (``_flush_or_drop``)."""
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        async with asyncio.timeout(1.0):
            await response.write_eof()
    await _flush_or_drop(writer, hub)


async def _flush_or_drop(writer: _Writer, hub: SseHub) -> None:
    """Give the client ``write_timeout`` to take the rest of the stream, then drop it.

    aiohttp closes the connection after this response, but a transport only
    closes once its buffer is flushed, which a client that stopped reading
    never lets happen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hub.write_timeout
    while True:
        transport = writer.request.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() == 0:
            return
        if hub.closing or loop.time() >= deadline:
            writer.drop()
            return
        await asyncio.sleep(0.1)
