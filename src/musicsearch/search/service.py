"""The HTTP API and web page of a store (FastAPI; run with ``musicsearch serve --store PATH``).

Endpoints (all JSON unless stated; the OpenAPI schema is at ``/openapi.json``, the interactive docs at ``/docs``):

* ``GET /api/health``: status, track count, model, backend.
* ``GET /api/search?q=&like=&k=&filter=&text_weight=``: :meth:`~musicsearch.search.api.Searcher.search`;
  ``like`` is an integer track id (never a path), ``filter`` repeats (``filter=year>=1990&filter=tag=jazz``).
* ``GET /api/tracks/{id}``: a track's metadata and window start times.
* ``GET /api/tracks/{id}/similar?k=``: tracks like it.
* ``GET /api/audio/{id}``: the track's audio file, streamed, with HTTP range requests (``206`` with
  ``Content-Range``; ``bytes=a-b``, open-ended ``bytes=a-`` and suffix ``bytes=-n``; ``416`` with
  ``Content-Range: bytes */size`` for unsatisfiable or malformed byte ranges; a multi-range request gets the
  whole file, ``200``, as RFC 9110 allows).
* ``GET /api/map?limit=``: 2-D coordinates of the collection for the plot.
* ``GET /``: the web page (``/static/app.js``, ``/static/style.css``; three fixed files, no directory serving).

Errors are JSON ``{"error": message}`` with ``400`` (bad input), ``404`` (unknown track or file), ``416`` (bad
range) or ``422`` (a parameter of the wrong type, with ``details``).

**Security rule for audio.** A file is only ever reached through an integer track id looked up in the store's
database, and served only if its path still resolves to the file recorded when it was indexed (see
:meth:`musicsearch.index.indexer.Store.playable_path`): no part of a request is ever used as a path, so
``../../etc/passwd``, ``%2e%2e``, absolute paths, or a symlink re-pointed outside the collection cannot be served.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from musicsearch import __version__
from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import Embedder
from musicsearch.search.api import MAX_QUERY_CHARS, Searcher

__all__ = ["WEB_DIR", "RangeNotSatisfiable", "create_app", "parse_range"]

log = logging.getLogger(__name__)

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
_CHUNK = 1 << 16
_MAX_K_HTTP = 100


class RangeNotSatisfiable(Exception):
    """A ``Range`` header that no part of the file satisfies (or that is malformed)."""


_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``(first, last)`` (inclusive) a ``Range`` header asks for, or ``None`` for the whole file.

    Args:
        header: the header value, e.g. ``"bytes=0-1023"``, ``"bytes=500-"``, ``"bytes=-500"``.
        size: file size in bytes.

    Returns:
        ``None`` when there is no header, another unit, or several ranges (served whole); else the range,
        clipped to the file (``last <= size - 1``).

    Raises:
        RangeNotSatisfiable: a malformed byte range, ``first > last``, a start at or past the end, an empty
            suffix (``bytes=-0``), or any range of an empty file.
    """
    if header is None or not header.strip():
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    m = _RANGE.match(spec)
    if not m or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"malformed range {header!r}")
    if size <= 0:
        raise RangeNotSatisfiable("the file is empty")
    first_s, last_s = m.group(1), m.group(2)
    if not first_s:  # suffix: the last n bytes
        n = int(last_s)
        if n == 0:
            raise RangeNotSatisfiable("an empty suffix range")
        return max(0, size - n), size - 1
    first = int(first_s)
    last = size - 1 if not last_s else int(last_s)
    if first > last or first >= size:
        raise RangeNotSatisfiable(f"range {first}-{last_s} is outside the file's {size} bytes")
    return first, min(last, size - 1)


def _iter_file(path: Path, first: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(first)
        left = length
        while left > 0:
            block = fh.read(min(_CHUNK, left))
            if not block:
                break
            left -= len(block)
            yield block


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(
    store: str | os.PathLike[str] | Searcher, *, model: str | os.PathLike[str] | Embedder | None = None
) -> FastAPI:
    """The FastAPI application serving one store.

    Args:
        store: a store directory, or an open :class:`~musicsearch.search.api.Searcher` (kept open).
        model: the store's own model by default.

    Returns:
        The app (its searcher is ``app.state.searcher``; close it when done).

    Raises:
        MusicSearchError: not a store, or a model other than the store's.
    """
    searcher = store if isinstance(store, Searcher) else Searcher.open(store, model=model)
    app = FastAPI(
        title="musicsearch",
        version=__version__,
        description="Search a music collection by text, by example, or both.",
    )
    app.state.searcher = searcher

    @app.exception_handler(MusicSearchError)
    async def _bad_input(request: Request, exc: MusicSearchError) -> JSONResponse:
        return _error(400, str(exc))

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
        return _error(
            exc.status_code, str(exc.detail), **({"path": request.url.path} if exc.status_code == 404 else {})
        )

    # -- API ---------------------------------------------------------------------------------------------------

    @app.get("/api/health", summary="Service status")
    def health() -> dict[str, Any]:
        s = searcher.store.settings
        return {
            "status": "ok",
            "version": __version__,
            "tracks": len(searcher.store),
            "model": s.model_name,
            "weights_checksum": s.weights_checksum,
            "preprocessing_version": s.plan.version(),
            "backend": s.backend,
            "dim": s.dim,
        }

    @app.get("/api/search", summary="Search by text, by example track, or both")
    def search_endpoint(
        q: Annotated[str | None, Query(description="text query; negative terms allowed ('piano, no vocals')")] = None,
        like: Annotated[int | None, Query(ge=0, description="integer id of an example track")] = None,
        k: Annotated[int, Query(ge=1, le=_MAX_K_HTTP, description="number of results")] = 10,
        filter: Annotated[
            list[str] | None, Query(description="repeatable: artist=X, year>=1990, tag=jazz, ...")
        ] = None,
        text_weight: Annotated[float, Query(ge=0.0, le=1.0, description="text share when q and like")] = 0.5,
    ) -> dict[str, Any]:
        if q is not None and len(q) > 4 * MAX_QUERY_CHARS:
            raise MusicSearchError(f"the query is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
        if q is not None and not q.strip():
            q = None if like is not None else q
        if filter is not None and len(filter) > 32:
            raise MusicSearchError(f"{len(filter)} filters given; at most 32 are allowed")
        resp = searcher.search(q, like, k, filter or None, text_weight=text_weight, allow_files=False)
        return resp.to_json(include_path=False)

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
    def track_endpoint(track_id: int) -> dict[str, Any]:
        return _track_json(track_id)

    @app.get("/api/tracks/{track_id}/similar", summary="Tracks like this one")
    def similar_endpoint(track_id: int, k: Annotated[int, Query(ge=1, le=_MAX_K_HTTP)] = 10) -> dict[str, Any]:
        _track_json(track_id)  # 404 for an unknown track
        return searcher.similar(track_id, k).to_json(include_path=False)

    @app.get("/api/audio/{track_id}", summary="The track's audio (HTTP ranges)")
    def audio_endpoint(track_id: int, request: Request) -> Response:
        return _audio(track_id, request)

    @app.head("/api/audio/{track_id}", include_in_schema=False)
    def audio_head(track_id: int, request: Request) -> Response:
        return _audio(track_id, request)

    def _audio(track_id: int, request: Request) -> Response:
        try:
            path = searcher.playable_path(track_id)
            size = path.stat().st_size
        except MusicSearchError as exc:
            raise StarletteHTTPException(404, str(exc)) from None
        except OSError:
            raise StarletteHTTPException(404, f"track {track_id}: its audio file is missing") from None
        media = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        try:
            span = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable as exc:
            return JSONResponse(
                {"error": f"range not satisfiable: {exc}"},
                status_code=416,
                headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        first, last = (0, size - 1) if span is None else span
        length = max(0, last - first + 1)
        headers["Content-Length"] = str(length)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media)
        return StreamingResponse(_iter_file(path, first, length), status_code=status, headers=headers, media_type=media)

    @app.get("/api/map", summary="2-D map of the collection")
    def map_endpoint(limit: Annotated[int, Query(ge=1, le=100_000)] = 20_000) -> dict[str, Any]:
        return searcher.collection_map(limit=limit)

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
