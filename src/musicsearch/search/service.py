"""The HTTP API and web page of a store (FastAPI; run with ``musicsearch serve --store PATH``).

Endpoints (all JSON unless stated; the OpenAPI schema is at ``/openapi.json``, the interactive docs at ``/docs``):

* ``GET /api/health``: status, track count, model, backend, and how many searches run and wait. An ``async``
  endpoint on the event loop: it never waits behind searches.
* ``GET /api/search?q=&like=&k=&filter=&text_weight=``: :meth:`~musicsearch.search.api.Searcher.search`;
  ``like`` is an integer track id (never a path), ``filter`` repeats (``filter=year>=1990&filter=tag=jazz``).
* ``GET /api/tracks/{id}``: a track's metadata and window start times.
* ``GET /api/tracks/{id}/similar?k=``: tracks like it.
* ``GET /api/audio/{id}``: the track's audio file through Starlette's ``FileResponse``, which parses and serves
  byte ranges (``206`` with ``Content-Range``; several ranges as ``multipart/byteranges``; ``If-Range``). Our own
  code only turns its plain-text errors into this API's JSON ``416`` with ``Content-Range: bytes */size``, serves
  a ``Range`` of another unit whole (RFC 9110), and checks that the file is still the one that was indexed.
* ``GET /api/map?limit=&colour=``: 2-D coordinates of the collection for the plot, coloured by named clusters
  (``colour=clusters``, the default) or by a tag family the collection has (``colour=genre``, ...).
* ``GET /``: the web page (``/static/app.js``, ``/static/style.css``; three fixed files, no directory serving).

Errors are JSON ``{"error": message}`` with ``400`` (bad input or a disallowed ``Host``), ``401`` (missing or
wrong API key), ``404`` (unknown track or file, ids of ``2**63`` or more included), ``409`` (the file changed since
it was indexed), ``416`` (bad range), ``422`` (a parameter of the wrong type, with ``details``) or ``503`` (too
many searches waiting; ``Retry-After``).

**Work off the event loop.** Everything that touches the searcher (text tower, vector indexes, SQLite) or hashes a
file runs in worker threads through one bounded gate (``search_threads`` at a time, at most ``max_queued``
waiting, more get ``503``); the event loop itself only parses requests and answers ``/api/health``. Query texts
are encoded in parallel, outside the searcher's lock, on a pool of ONNX Runtime text sessions (one per core, one
intra-op thread each: ``text_sessions``); the vector search and the SQLite lookups (about 1 ms) run one at a time
under that lock. A torch model (no export) encodes one query at a time.

**Security rule for audio.** A file is only ever reached through an integer track id looked up in the store's
database, and served only if its path still resolves to the file recorded when it was indexed (see
:meth:`musicsearch.index.indexer.Store.playable_path`) *and* its bytes still have the SHA-256 recorded by the indexer
(checked once per file state, see :class:`AudioVerifier`): no part of a request is ever used as a path, so
``../../etc/passwd``, ``%2e%2e``, absolute paths, a symlink re-pointed outside the collection, a file replaced by
a hard link to another file, or an edited file cannot be served.

**Network guards** (see ``docs/security.md``): a ``Host`` allow-list against DNS rebinding
(:class:`HostAllowList`), an optional API key (:class:`ApiKeyAuth`), and for the server itself
(:func:`build_server`) connection, header-read and keep-alive limits and rate-limited connection-error logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import unquote

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from musicsearch import __version__
from musicsearch.errors import MusicSearchError
from musicsearch.fileio import sha256_file
from musicsearch.index.embedder import Embedder
from musicsearch.search.api import TEXT_CACHE_SIZE, Searcher
from musicsearch.search.query import MAX_QUERY_CHARS
from musicsearch.search.textenc import OnnxEmbedder, default_text_sessions

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "API_KEY_ENV",
    "WEB_DIR",
    "ApiKeyAuth",
    "AudioVerifier",
    "FileChangedError",
    "HostAllowList",
    "LogRateLimit",
    "ServerLimits",
    "build_server",
    "create_app",
    "default_allowed_hosts",
    "is_loopback",
]

log = logging.getLogger(__name__)

#: The environment variable ``musicsearch serve`` reads the API key from (``--api-key`` overrides it).
API_KEY_ENV = "MUSICSEARCH_API_KEY"
#: The cookie the web page stores the key in, so that its ``<audio>`` element (which cannot send headers) plays.
API_KEY_COOKIE = "musicsearch_key"
_EMPTY_KEY = f"the API key is empty; set a long random key (e.g. `openssl rand -hex 32`) in {API_KEY_ENV}"

#: The web page's files.
WEB_DIR = Path(__file__).resolve().parent / "web"
_WEB_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_MEDIA_TYPES = {
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".wma": "audio/x-ms-wma",
}
_MAX_K_HTTP = 100
_MAX_ID = 2**63 - 1  # SQLite's INTEGER; larger ids cannot name a track
_RACY_NS = 2_000_000_000  # a file's verdict is cached only once it has been unchanged this long (ns)
_T = TypeVar("_T")


def _error(status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def _send_error(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send this API's JSON error from a pure ASGI middleware."""
    body = json.dumps({"error": message}).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _short(text: str, limit: int = 60) -> str:
    """``text`` for an error message, cut to ``limit`` characters (a 5,000-digit header is not echoed whole)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# -- Host allow-list ---------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name reaches only this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str = "127.0.0.1") -> list[str]:
    """The ``Host`` names accepted by default: the bind address (unless it is every interface), ``localhost``,
    ``127.0.0.1`` and ``::1``.

    Args:
        bind_host: the address the server listens on.

    Returns:
        Host names without ports; a name behind a proxy or a LAN address must be added (``--allowed-host``).
    """
    hosts = ["localhost", "127.0.0.1", "::1"]
    name = _normalise_host(bind_host)
    if name and name not in ("0.0.0.0", "::") and name not in hosts:
        hosts.insert(0, name)
    return hosts


def _normalise_host(value: str) -> str:
    """A host name or address as compared: lower case, no port, no brackets, no trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") == 1:  # name:port (an IPv6 address without brackets has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class HostAllowList:
    """ASGI middleware: answer ``400`` (JSON) to a request whose ``Host`` header is not on the list.

    It blocks DNS rebinding: a web page on ``evil.example`` that re-points its name to ``127.0.0.1`` reaches the
    server with ``Host: evil.example``, which is not on the list. Ports are ignored; ``*`` allows every host and
    ``*.example.org`` every subdomain of ``example.org``. Starlette's ``TrustedHostMiddleware`` is not used: it
    answers in plain text, and cuts ``[::1]:8000`` at its first colon.

    Args:
        app: the wrapped application.
        allowed_hosts: names or addresses (ports and brackets stripped).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.exact = {_normalise_host(h) for h in allowed_hosts if not h.strip().startswith("*")}
        self.suffixes = tuple(h.strip().lower()[1:] for h in allowed_hosts if h.strip().startswith("*."))
        self.allow_any = any(h.strip() == "*" for h in allowed_hosts)

    def allows(self, host_header: str | None) -> bool:
        """Whether a ``Host`` header value is allowed (a missing one is not)."""
        if self.allow_any:
            return True
        if not host_header:
            return False
        host = _normalise_host(host_header)
        return bool(host) and (host in self.exact or any(host.endswith(s) for s in self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        name = _short(_normalise_host(host or "")) or "(none)"
        await _send_error(
            send,
            400,
            f"host {name!r} is not allowed here; if this server should answer to that name, start it with "
            f"`musicsearch serve --allowed-host {name}` (see docs/security.md)",
        )


# -- API key -----------------------------------------------------------------------------------------------------


class ApiKeyAuth:
    """ASGI middleware: every path except the page (``/``, ``/static/...``) needs the API key.

    The key is read from ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or, for the web page's ``<audio>``
    element, the ``musicsearch_key`` cookie the page sets (``SameSite=Strict``). Keys are compared in constant time
    (SHA-256 digests through :func:`hmac.compare_digest`, so neither content nor length leaks through timing).
    A wrong or missing key gets ``401`` JSON with ``WWW-Authenticate: Bearer``; the key itself is never logged.

    Args:
        app: the wrapped application.
        api_key: the key (non-empty).

    Raises:
        MusicSearchError: an empty key.
    """

    PUBLIC = ("/", "/static/app.js", "/static/style.css")

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key or not api_key.strip():
            raise MusicSearchError(_EMPTY_KEY)
        self.app = app
        self._digest = hashlib.sha256(api_key.encode("utf-8")).digest()

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(candidate.encode("utf-8", "surrogateescape")).digest(), self._digest)

    def authorised(self, headers: Headers) -> bool:
        """Whether the request carries the key in one of the accepted places."""
        candidates: list[str] = []
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.strip().partition(" ")
            if scheme.lower() == "bearer":
                candidates.append(token.strip())
        if (x_key := headers.get("x-api-key")) is not None:
            candidates.append(x_key.strip())
        for part in headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == API_KEY_COOKIE:
                candidates.append(unquote(value.strip()))  # the page stores it with encodeURIComponent
        ok = False
        for c in candidates:  # every candidate compared: no early exit that times which place matched
            ok |= self._matches(c)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.authorised(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"] in self.PUBLIC:
            await self.app(scope, receive, send)
            return
        await _send_error(
            send,
            401,
            "this server needs an API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
            "(the web page asks for it once)",
            [(b"www-authenticate", b"Bearer")],
        )


# -- work off the event loop -------------------------------------------------------------------------------------


class _Busy(Exception):
    """No worker thread for this request: the queue is full, or it waited ``queue_timeout`` seconds."""


class _Gate:
    """Run blocking work in at most ``threads`` worker threads, with at most ``max_queued`` callers waiting and
    none waiting longer than ``queue_timeout`` seconds for a thread (work that has started is never cut short).

    Only touched from the event loop's thread (no lock needed for the counters). ``thread_setup`` runs once in
    each worker thread before its first piece of work: thread-count settings of OpenMP libraries (FAISS) are
    per thread, so a setting made in the main thread does not reach the workers.
    """

    def __init__(
        self,
        threads: int,
        max_queued: int,
        queue_timeout: float,
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        if threads < 1 or max_queued < 0 or not queue_timeout > 0:
            raise MusicSearchError(
                f"search_threads must be >= 1, max_queued >= 0 and queue_timeout > 0; "
                f"got {threads}, {max_queued} and {queue_timeout}"
            )
        self.slots = anyio.CapacityLimiter(threads)  # who may run (acquired with a timeout)
        self.threads = anyio.CapacityLimiter(threads)  # the worker threads themselves
        self.capacity = threads + max_queued
        self.queue_timeout = queue_timeout
        self.pending = 0
        self.thread_setup = thread_setup
        self._local = threading.local()

    def _in_worker(self, fn: Callable[[], _T]) -> Callable[[], _T]:
        if self.thread_setup is None:
            return fn
        setup, local = self.thread_setup, self._local

        def call() -> _T:
            if not getattr(local, "ready", False):
                setup()
                local.ready = True
            return fn()

        return call

    def state(self) -> dict[str, int]:
        running = int(self.slots.borrowed_tokens)
        return {"running": running, "waiting": self.pending - running, "limit": self.capacity}

    async def run(self, fn: Callable[[], _T]) -> _T:
        if self.pending >= self.capacity:
            raise _Busy(f"{self.pending} requests are running or waiting, the limit is {self.capacity}")
        self.pending += 1
        try:
            acquired = False
            with anyio.move_on_after(self.queue_timeout):
                await self.slots.acquire()
                acquired = True
            if not acquired:
                raise _Busy(f"the request waited {self.queue_timeout:g} s for a worker thread")
            try:
                return await anyio.to_thread.run_sync(self._in_worker(fn), limiter=self.threads)
            finally:
                self.slots.release()
        finally:
            self.pending -= 1

    async def json(self, fn: Callable[[], Any]) -> JSONResponse:
        """:meth:`run` ``fn`` and encode its result as JSON in the worker thread too: a 20 000-point map or a page
        of results is not serialised on the event loop."""
        return await self.run(lambda: JSONResponse(fn()))


# -- audio files ---------------------------------------------------------------------------------------------------


class FileChangedError(MusicSearchError):
    """An indexed audio file no longer holds the bytes that were indexed (``409`` over HTTP)."""


class AudioVerifier:
    """Checks that a track's audio file still holds the bytes that were indexed before it is served.

    The indexer records each track's SHA-256 (``content_hash`` in the store's track metadata). The first request for a
    file hashes it; the verdict is then kept for that exact file state, keyed by ``(device, inode, size, mtime,
    ctime)``. Any edit, a restored modification time (ctime still moves), or a swap for a hard link to another
    file (another inode) changes the key, and the file is hashed again. File times advance in coarse ticks (a few
    ms), so as in Git's "racily clean" rule a verdict is only kept for a file unchanged for over 2 s when it was
    checked: a rewrite within the same tick cannot hide behind an equal key. At most ``max_entries`` verdicts
    are kept.

    Args:
        max_entries: the size of the verdict cache (least recently used out first).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._ok: OrderedDict[tuple[str, int, int, int, int, int], str] = OrderedDict()
        self._lock = threading.Lock()
        self.hashes = 0  # files hashed so far (tests and the docs' measurement read it)

    @staticmethod
    def _key(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int, int]:
        return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def check(self, track: int, path: Path, content_hash: str) -> os.stat_result:
        """The file's ``stat`` if its bytes have the indexed hash.

        Args:
            track: the track's id (for messages).
            path: the file, already through :meth:`~musicsearch.index.indexer.Store.playable_path`.
            content_hash: the track's ``content_hash`` (``sha256:<hex>;meta:<digest>``).

        Returns:
            ``os.stat`` of the file as verified.

        Raises:
            OSError: the file cannot be read (gone: the app answers ``404``).
            FileChangedError: its bytes differ from what was indexed.
        """
        recorded = content_hash.split(";", 1)[0]
        if not recorded.startswith("sha256:"):
            raise FileChangedError(
                f"track {track}: the store records no SHA-256 of its audio file, so it cannot be checked; "
                "re-index the collection (`musicsearch index`) to serve it"
            )
        want = recorded.removeprefix("sha256:")
        st = os.stat(path)
        key = self._key(path, st)
        with self._lock:
            if self._ok.get(key) == want:
                self._ok.move_to_end(key)
                return st
        settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS
        got = sha256_file(path)
        after = os.stat(path)
        with self._lock:
            self.hashes += 1
        if got != want or self._key(path, after) != key:  # changed while hashed: do not trust the verdict
            raise FileChangedError(
                f"track {track}: its audio file has changed since it was indexed (other bytes, or replaced by "
                "another file); re-index the collection (`musicsearch index`) to serve it"
            )
        if settled:  # a file changed in the last seconds could change again within the same timestamp tick
            with self._lock:
                self._ok[key] = want
                self._ok.move_to_end(key)
                while len(self._ok) > self.max_entries:
                    self._ok.popitem(last=False)
        return st


class _AudioFile(FileResponse):
    """Starlette's ``FileResponse`` (its own ``Range`` parser and range/multipart serving) with this API's errors:
    its plain-text ``400`` (malformed range) and ``416`` become JSON ``416`` with ``Content-Range: bytes */size``,
    and a ``Range`` of another unit (or an empty one) is ignored, as RFC 9110 says, instead of refused."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = Headers(scope=scope).get("range")
        if header is not None:
            unit, sep, _ = header.partition("=")
            if not header.strip() or (sep and unit.strip().lower() != "bytes"):
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        assert self.stat_result is not None
        size = self.stat_result.st_size
        replaced = False

        async def send_json_errors(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                replaced = True
                await _send_error(
                    send,
                    416,
                    f"range not satisfiable: {_short(header or '')!r}; the file has {size} bytes: ask for "
                    f"bytes=FIRST-LAST with FIRST < {size}, bytes=FIRST- or bytes=-COUNT",
                    [(b"content-range", f"bytes */{size}".encode()), (b"accept-ranges", b"bytes")],
                )
            elif not replaced:
                await send(message)

        await super().__call__(scope, receive, send_json_errors)


# -- the app -------------------------------------------------------------------------------------------------------


def create_app(
    store: str | os.PathLike[str] | Searcher,
    *,
    model: str | os.PathLike[str] | Embedder | None = None,
    allowed_hosts: Sequence[str] | None = None,
    api_key: str | None = None,
    search_threads: int | None = None,
    max_queued: int = 32,
    queue_timeout: float = 30.0,
    text_cache_size: int = TEXT_CACHE_SIZE,
    text_sessions: int | None = None,
    text_threads: int = 1,
    thread_setup: Callable[[], None] | None = None,
) -> FastAPI:
    """The FastAPI application serving one store.

    Args:
        store: a store directory, or an open :class:`~musicsearch.search.api.Searcher` (kept open).
        model: the store's own model by default.
        allowed_hosts: accepted ``Host`` header names (see :class:`HostAllowList`); ``None``:
            :func:`default_allowed_hosts` of ``127.0.0.1``. ``["*"]`` turns the check off.
        api_key: require this key on the API (see :class:`ApiKeyAuth`); ``None``: no key.
        search_threads: worker threads for searcher work and file checks (``None``: ``text_sessions + 1``, so
            that every text session can be busy while one more thread does a lookup). Query texts are encoded in
            these threads in parallel; the vector search and SQLite lookups run one at a time under the
            searcher's lock.
        max_queued: requests that may wait for a worker thread; beyond, ``503`` with ``Retry-After: 1``.
        queue_timeout: seconds a request may wait for a worker thread before it gets that ``503``.
        text_cache_size: query texts whose embeddings the searcher keeps (LRU; 0: none).
        text_sessions: ONNX Runtime sessions of the text tower
            (:meth:`~musicsearch.search.textenc.OnnxEmbedder.use_text_sessions`; ``None``: one per core). A
            torch model (no export) runs one text query at a time whatever this says.
        text_threads: intra-op threads per text session (0: ONNX Runtime's default, one per core).
        thread_setup: run once in each worker thread before its first request (``musicsearch serve`` limits the
            threads of FAISS and torch there: OpenMP thread counts are per thread).

    Returns:
        The app (its searcher is ``app.state.searcher``; close it when done).

    Raises:
        MusicSearchError: not a store, a model other than the store's, an empty API key, or bad limits.
    """
    sessions = default_text_sessions() if text_sessions is None else text_sessions
    if sessions < 1 or text_threads < 0:
        raise MusicSearchError(
            f"text_sessions must be >= 1 and text_threads >= 0, got {text_sessions} and {text_threads}"
        )
    gate = _Gate(sessions + 1 if search_threads is None else search_threads, max_queued, queue_timeout, thread_setup)
    if api_key is not None and not api_key.strip():
        raise MusicSearchError(_EMPTY_KEY)
    searcher = (
        store if isinstance(store, Searcher) else Searcher.open(store, model=model, text_cache_size=text_cache_size)
    )
    if isinstance(searcher.embedder, OnnxEmbedder):
        try:
            searcher.embedder.use_text_sessions(sessions, threads=text_threads)
        except BaseException:
            if not isinstance(store, Searcher):
                searcher.close()
            raise
    settings = searcher.store.settings
    verifier = AudioVerifier()
    count_limiter = anyio.CapacityLimiter(1)  # the health endpoint's own thread: never behind the search gate
    app = FastAPI(
        title="musicsearch",
        version=__version__,
        description="Search a music collection by text, by example, or both.",
    )
    app.state.searcher = searcher
    app.state.audio_verifier = verifier
    app.state.gate = gate
    if api_key is not None:
        app.add_middleware(ApiKeyAuth, api_key=api_key)
    app.add_middleware(HostAllowList, allowed_hosts=list(allowed_hosts or default_allowed_hosts()))  # outermost

    @app.exception_handler(MusicSearchError)
    async def _bad_input(request: Request, exc: MusicSearchError) -> JSONResponse:
        return _error(409 if isinstance(exc, FileChangedError) else 400, str(exc))

    @app.exception_handler(_Busy)
    async def _busy(request: Request, exc: _Busy) -> JSONResponse:
        return _error(503, f"the server is busy ({exc}); retry in a moment", headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = details[0] if details else {"where": "request", "problem": "invalid"}
        return _error(422, f"invalid {first['where']}: {first['problem']}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None  # e.g. 405's Allow
        if exc.status_code == 404:
            return _error(404, str(exc.detail), headers=headers, path=_short(request.url.path, 200))
        return _error(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error; the server log has the details")

    def _known_id(track_id: int) -> int:
        if not 0 <= track_id <= _MAX_ID:
            raise StarletteHTTPException(404, f"no track with id {_short(str(track_id))} in this store")
        return track_id

    # -- API ---------------------------------------------------------------------------------------------------

    @app.get("/api/health", summary="Service status")
    async def health() -> dict[str, Any]:
        tracks = await anyio.to_thread.run_sync(len, searcher.store, limiter=count_limiter)
        return {
            "status": "ok",
            "version": __version__,
            "tracks": tracks,
            "model": settings.model_name,
            "weights_checksum": settings.weights_checksum,
            "preprocessing_version": settings.plan.version(),
            "backend": settings.backend,
            "track_index": searcher.store.tracks.index_info(),
            "dim": settings.dim,
            "searches": gate.state(),
        }

    @app.get("/api/search", summary="Search by text, by example track, or both")
    async def search_endpoint(
        q: Annotated[str | None, Query(description="text query; negative terms allowed ('piano, no vocals')")] = None,
        like: Annotated[int | None, Query(ge=0, description="integer id of an example track")] = None,
        k: Annotated[int, Query(ge=1, le=_MAX_K_HTTP, description="number of results")] = 10,
        filter: Annotated[
            list[str] | None, Query(description="repeatable: artist=X, year>=1990, tag=jazz, ...")
        ] = None,
        text_weight: Annotated[float, Query(ge=0.0, le=1.0, description="text share when q and like")] = 0.5,
    ) -> Response:
        if q is not None and len(q) > 4 * MAX_QUERY_CHARS:
            raise MusicSearchError(f"the query is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
        if q is not None and not q.strip():
            q = None if like is not None else q
        if filter is not None and len(filter) > 32:
            raise MusicSearchError(f"{len(filter)} filters given; at most 32 are allowed")
        if like is not None and like > _MAX_ID:
            raise MusicSearchError(f"like={_short(str(like))}: no track with this id in the store")

        def work() -> dict[str, Any]:
            resp = searcher.search(q, like, k, filter or None, text_weight=text_weight, allow_files=False)
            return resp.to_json(include_path=False)

        return await gate.json(work)

    def _track_json(track_id: int) -> dict[str, Any]:
        try:
            rec = searcher.track(track_id)
        except MusicSearchError as exc:
            raise StarletteHTTPException(404, str(exc)) from None
        windows = searcher.windows(rec.id)
        return {
            "id": rec.id,
            "track_id": rec.track_id,
            "title": rec.title,
            "artist": rec.artist,
            "album": rec.album,
            "year": rec.year,
            "duration": rec.duration,
            "folder": rec.folder,
            "tags": list(rec.tags),
            "windows": [round(w, 3) for w in windows],
            "audio_url": f"/api/audio/{rec.id}",
            "similar_url": f"/api/tracks/{rec.id}/similar",
            "indexed_at": rec.indexed_at,
        }

    @app.get("/api/tracks/{track_id}", summary="A track's metadata")
    async def track_endpoint(track_id: int) -> Response:
        tid = _known_id(track_id)
        return await gate.json(lambda: _track_json(tid))

    @app.get("/api/tracks/{track_id}/similar", summary="Tracks like this one")
    async def similar_endpoint(track_id: int, k: Annotated[int, Query(ge=1, le=_MAX_K_HTTP)] = 10) -> Response:
        tid = _known_id(track_id)

        def work() -> dict[str, Any]:
            _track_json(tid)  # 404 for an unknown track
            return searcher.similar(tid, k).to_json(include_path=False)

        return await gate.json(work)

    def _verified(track_id: int) -> tuple[Path, os.stat_result]:
        try:
            path = searcher.playable_path(track_id)
            rec = searcher.track(track_id)
            return path, verifier.check(track_id, path, rec.content_hash)
        except FileChangedError:
            raise
        except MusicSearchError as exc:
            raise StarletteHTTPException(404, str(exc)) from None
        except OSError:
            raise StarletteHTTPException(404, f"track {track_id}: its audio file is missing") from None

    @app.get("/api/audio/{track_id}", summary="The track's audio (HTTP ranges)")
    async def audio_endpoint(track_id: int) -> Response:
        return await _audio(track_id)

    @app.head("/api/audio/{track_id}", include_in_schema=False)
    async def audio_head(track_id: int) -> Response:
        return await _audio(track_id)

    async def _audio(track_id: int) -> Response:
        tid = _known_id(track_id)
        path, st = await gate.run(lambda: _verified(tid))
        media = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return _AudioFile(path, media_type=media, stat_result=st, headers={"Cache-Control": "no-cache"})

    @app.get("/api/map", summary="2-D map of the collection")
    async def map_endpoint(
        limit: Annotated[int, Query(ge=1, le=100_000)] = 20_000,
        colour: Annotated[str, Query(min_length=1, max_length=64)] = "clusters",
    ) -> Response:
        return await gate.json(lambda: searcher.collection_map(limit=limit, colour=colour))

    # -- the page ----------------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in _WEB_FILES:  # a fixed list: nothing else on disk is reachable
            raise StarletteHTTPException(404, "not found")
        return FileResponse(WEB_DIR / name, media_type=_WEB_FILES[name])

    return app


# -- the server ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerLimits:
    """Limits of the HTTP server (``musicsearch serve`` options of the same names).

    Attributes:
        max_connections: open connections (and requests in flight) beyond which new requests get ``503``
            (uvicorn's ``limit_concurrency``).
        header_timeout: seconds a connection may take to send a request's headers (from connecting, or from the
            end of the previous response) before it is closed: half-open and slow-header (slowloris) connections
            do not pile up.
        keep_alive: seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``).
        max_header_bytes: largest request head (line and headers) in bytes; larger gets ``400``
            (h11's ``max_incomplete_event_size``).
        backlog: connections the kernel queues before they are accepted.
        graceful_shutdown: seconds in-flight requests get on Ctrl-C.
        log_burst: connection-error log lines of one kind per ``log_window`` seconds; the rest are counted and
            summarised (see :class:`LogRateLimit`).
        log_window: seconds.
    """

    max_connections: int = 128
    header_timeout: float = 10.0
    keep_alive: int = 5
    max_header_bytes: int = 16384
    backlog: int = 256
    graceful_shutdown: int = 5
    log_burst: int = 10
    log_window: float = 60.0

    def validate(self) -> None:
        """Raises MusicSearchError: a limit that is not positive."""
        for name in ("max_connections", "header_timeout", "keep_alive", "max_header_bytes", "backlog", "log_window"):
            if not getattr(self, name) > 0:
                raise MusicSearchError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")


class LogRateLimit(logging.Filter):
    """A log filter letting through at most ``burst`` records of one kind (logger and message template) per
    ``window`` seconds; the first record let through after a suppression says how many were dropped.

    Attach it to the loggers a hostile client can make noisy (``uvicorn.error`` logs one line per invalid request
    or refused connection, ``asyncio`` one per write to a dead socket): their output stays bounded.

    Args:
        burst: records of one kind per window.
        window: seconds.
        clock: monotonic clock (tests pass a fake one).
    """

    def __init__(self, burst: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # kind -> [window start, count, suppressed]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            if len(self._seen) > 1000:  # bounded memory whatever the messages
                self._seen.clear()
            state = self._seen.setdefault(kind, [now, 0, 0])
            if now - state[0] >= self.window:
                state[0], state[1] = now, 0
            if state[1] >= self.burst:
                state[2] += 1
                return False
            state[1] += 1
            dropped, state[2] = int(state[2]), 0
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this not logged]"
        return True


_NOISY_LOGGERS = ("uvicorn.error", "asyncio")


def _protocol_class(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing connections that do not send a request's headers in ``header_timeout`` s.

    uvicorn arms its keep-alive timer only after a response, and cancels it on any byte received: a client that
    connects and sends nothing, or one header byte now and then, would otherwise hold its connection forever.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def _header_timeout(self) -> None:
            self._header_timer = None
            handling = self.cycle is not None and not self.cycle.response_complete
            if not handling and not self.transport.is_closing():  # no request came in time (a long one may run)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return HeaderTimeoutH11


def build_server(app: ASGIApp, *, host: str, port: int, limits: ServerLimits | None = None) -> uvicorn.Server:
    """A uvicorn server for ``app`` with :class:`ServerLimits` applied (run it with ``.run()``).

    The h11 protocol (with the header timeout), no WebSockets, no access log, no ``Server`` header; logging is
    left to the caller's configuration, with :class:`LogRateLimit` on the loggers a client can flood.

    Args:
        app: the application (:func:`create_app`).
        host: the address to listen on.
        port: the port (``0``: any free one).
        limits: the limits (defaults: :class:`ServerLimits`).

    Returns:
        The server, not started.

    Raises:
        MusicSearchError: a limit that is not positive.
    """
    import uvicorn

    limits = limits or ServerLimits()
    limits.validate()
    for name in _NOISY_LOGGERS:  # one filter per logger, with this server's limits (an earlier one replaced)
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, LogRateLimit)]:
            logger.removeFilter(old)
        logger.addFilter(LogRateLimit(limits.log_burst, limits.log_window))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol_class(limits.header_timeout),
        ws="none",
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        backlog=limits.backlog,
        timeout_graceful_shutdown=limits.graceful_shutdown,
        log_config=None,
        log_level=None,
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)
