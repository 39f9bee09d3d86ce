"""Getting the published weights: resumable HTTP download, SHA-256 sidecars, safe extraction of one variant's
``best.pth`` from ``mtr.tar.gz``, search of an unpacked folder, and :func:`locate_weights`, which picks the source.

Where the weights come from (first that applies): ``weights`` (an ``mtr.tar.gz``, an unpacked folder, or one
``best.pth``), ``$MUSICSEARCH_TTMR_WEIGHTS``, an ``mtr/`` folder or ``mtr.tar.gz`` in the cache folder
(``$MUSICSEARCH_CACHE/published``, default ``~/.cache/musicsearch/published``), else a download from Zenodo into
the cache (progress bar, resumable ``.part`` file, SHA-256 recorded beside it on first download and checked on
later use). The catalogue of variants is :mod:`musicsearch.models.pretrained`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from musicsearch import __version__
from musicsearch.errors import CheckpointError
from musicsearch.fileio import atomic_path, sha256_file, write_json

if TYPE_CHECKING:
    from musicsearch.models.pretrained import PublishedModel

log = logging.getLogger(__name__)

ZENODO_RECORD = "7322135"
ARCHIVE_NAME = "mtr.tar.gz"
ARCHIVE_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{ARCHIVE_NAME}?download=1"

ENV_CACHE = "MUSICSEARCH_CACHE"
ENV_WEIGHTS = "MUSICSEARCH_TTMR_WEIGHTS"


# --- cache, download, checksum ----------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$MUSICSEARCH_CACHE/published``, default ``~/.cache/musicsearch/published``."""
    root = os.environ.get(ENV_CACHE) or "~/.cache/musicsearch"
    return Path(root).expanduser() / "published"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record_checksum(path: str | os.PathLike[str]) -> str:
    """Compute ``path``'s SHA-256 and store it beside it as ``<name>.sha256`` (``sha256sum`` format)."""
    p = Path(path)
    digest = sha256_file(p)
    with atomic_path(_sidecar(p)) as tmp:
        tmp.write_text(f"{digest}  {p.name}\n", encoding="utf-8")
    return digest


def verify_checksum(path: str | os.PathLike[str]) -> str:
    """Check ``path`` against its recorded ``.sha256`` (recording one if there is none yet).

    Returns:
        The SHA-256.

    Raises:
        CheckpointError: if the file no longer matches the recorded checksum.
    """
    p = Path(path)
    side = _sidecar(p)
    if not side.is_file():
        log.info("recording the SHA-256 of %s beside it", p)
        return record_checksum(p)
    expected = side.read_text(encoding="utf-8").split()[0].lower()
    actual = sha256_file(p)
    if actual != expected:
        raise CheckpointError(
            f"{p} has SHA-256 {actual}, but {expected} was recorded when it was downloaded: the file was changed "
            f"or damaged. Delete {p} and {side} to download it again"
        )
    return actual


class _Retry(Exception):
    """A transfer that stopped early or must restart; the caller retries."""


def _offline_message(url: str, dest: Path, reason: str, part: Path) -> str:
    have = part.stat().st_size if part.exists() else 0
    kept = f" {have:,} bytes are kept in {part}; run again to resume." if have else ""
    return (
        f"could not download {url} ({reason}).{kept} Without network access: fetch that file (Zenodo record "
        f"{ZENODO_RECORD}, {ARCHIVE_NAME}) on a machine that has it and put it at {dest}, or pass "
        f"weights= (CLI --weights) an {ARCHIVE_NAME}, an unpacked mtr/ folder or a best.pth"
    )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL`` -> ``(start, total)`` (None where absent)."""
    if not value or not value.startswith("bytes"):
        return None, None
    spec = value.split(None, 1)[-1]
    span, _, total = spec.partition("/")
    start = int(span.split("-")[0]) if span and span != "*" else None
    return start, (int(total) if total.isdigit() else None)


def _download_once(url: str, part: Path, *, timeout: float, chunk_size: int, progress: bool | None) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"musicsearch/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            _, full = _content_range(exc.headers.get("Content-Range"))
            if full == have:
                return  # the partial file is already complete
            part.unlink()
            raise _Retry(f"server refused to resume at byte {have}; restarting") from None
        raise CheckpointError(
            f"downloading {url} failed with HTTP {exc.code} {exc.reason}; check the address, or fetch "
            f"{ARCHIVE_NAME} by hand and pass it as weights="
        ) from None
    with resp:
        total: int | None
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                raise _Retry(f"server resumed at byte {start}, not {have}; restarting")
            mode = "ab"
        else:  # 200: the whole file (a server that ignores Range)
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        with (
            part.open(mode) as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[: -len(".part")],
                disable=None if progress is None else not progress,
            ) as bar,
        ):
            while True:
                try:
                    block = resp.read(chunk_size)
                except http.client.IncompleteRead as exc:
                    fh.write(exc.partial)
                    raise _Retry("the connection closed before the end of the file") from None
                if not block:
                    break
                fh.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retry(f"got {size:,} of {total:,} bytes")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    progress: bool | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` through a resumable ``dest.part`` and record its SHA-256 beside it.

    An existing ``.part`` is resumed with an HTTP ``Range`` request (a server that answers with the whole file
    restarts it). On success the file is renamed to ``dest`` and ``dest.sha256`` is written.

    Args:
        url: http(s) address.
        dest: final file path.
        progress: tqdm bar on stderr: True, False, or None (shown when stderr is a terminal).
        retries: further attempts (each resuming) after a transfer that broke off; a server that cannot be
            reached at all fails at once.
        retry_wait: seconds before the first retry (doubled each time).
        timeout: socket timeout in seconds.
        chunk_size: bytes per read.

    Returns:
        ``dest``.

    Raises:
        CheckpointError: when the server cannot be reached (no network) or answers with an HTTP error; the
            message says which file to fetch and where to put it. The ``.part`` file is kept for a later resume.
    """
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _download_once(url, part, timeout=timeout, chunk_size=chunk_size, progress=progress)
            break
        except _Retry as exc:
            reason = str(exc)
        except urllib.error.URLError as exc:  # no connection at all (offline, refused, DNS): retrying won't help
            raise CheckpointError(_offline_message(url, dest, str(exc.reason), part)) from None
        except (OSError, http.client.HTTPException) as exc:  # reset or timed out mid-transfer, bad status line
            reason = f"{exc.__class__.__name__}: {exc}"
        attempt += 1
        if attempt > retries:
            raise CheckpointError(_offline_message(url, dest, reason, part))
        wait = retry_wait * 2 ** (attempt - 1)
        log.warning("download of %s interrupted (%s); retry %d of %d in %.0f s", url, reason, attempt, retries, wait)
        time.sleep(wait)
    os.replace(part, dest)
    digest = record_checksum(dest)
    log.info("downloaded %s (%s bytes, SHA-256 %s)", dest, f"{dest.stat().st_size:,}", digest)
    return dest


# --- finding best.pth in an archive or a folder -----------------------------------------------------------------


def _member_name(name: str) -> str:
    """An archive member's name without a leading ``./``; raises on an absolute name or a ``..`` component."""
    clean = name.replace("\\", "/")
    while clean.startswith("./"):
        clean = clean[2:]
    pure = PurePosixPath(clean)
    if pure.is_absolute() or ".." in pure.parts or (len(clean) > 1 and clean[1] == ":"):
        raise CheckpointError(
            f"archive member {name!r} points outside the archive (absolute path or '..'); refusing an unsafe archive"
        )
    return clean


def _matches(parts: Sequence[str], variant: PublishedModel) -> bool:
    """A ``best.pth`` path (as parts) is the variant's: its folder is the variant's, under its objective."""
    return len(parts) >= 2 and parts[-1] == "best.pth" and parts[-2] == variant.folder and variant.objective in parts


def _not_found(variant: PublishedModel, where: str, found: Sequence[str]) -> CheckpointError:
    listing = "; ".join(found[:20]) + (f" (+{len(found) - 20} more)" if len(found) > 20 else "") if found else "none"
    return CheckpointError(
        f"{where} has no best.pth for {variant.name} (expected {variant.member}). best.pth files found: "
        f"{listing}. Pass the right file directly as weights=.../best.pth"
    )


def extract_from_archive(
    archive: str | os.PathLike[str], variant: PublishedModel, dest_dir: str | os.PathLike[str]
) -> Path:
    """Extract the variant's ``best.pth`` (and its ``hparams.yaml`` when present) from an ``mtr.tar.gz``.

    Only those members are read out, each written to ``dest_dir`` under a fixed name (never to a path taken
    from the archive). Any member with an absolute name or a ``..`` component makes the whole archive refused.
    When the expected member is missing, every ``best.pth`` in the archive is listed; a single one in a folder
    named like the variant, under its objective, is used (the layout differs but the file is unambiguous).

    Returns:
        The extracted ``best.pth``.

    Raises:
        CheckpointError: for an unreadable or unsafe archive, or no (or several) matching ``best.pth``.
    """
    src = Path(archive)
    out_dir = Path(dest_dir)
    try:
        tf = tarfile.open(src, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise CheckpointError(f"{src} is not a readable tar archive ({exc}); fetch it again") from None
    with tf:
        found: list[str] = []
        yamls: dict[str, bytes] = {}  # folder -> hparams.yaml content (small: read as the stream passes)
        chosen: tarfile.TarInfo | None = None
        chosen_dir = ""
        try:
            for m in tf:
                name = _member_name(m.name)
                folder, _, base = name.rpartition("/")
                if chosen is not None and folder != chosen_dir:
                    break  # tar lists a folder's files together: nothing more of the variant's is coming
                if base == "hparams.yaml" and m.isfile():
                    yamls[folder] = _read_member(tf, m, src)
                elif base == "best.pth":
                    found.append(name)
                    if name == variant.member:
                        # written while the stream is at it: a later backward seek in a .gz re-reads from the start
                        _write_member(tf, m, out_dir / "best.pth", src)
                        chosen, chosen_dir = m, folder
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CheckpointError(f"{src} is truncated or damaged ({exc}); fetch it again") from None
        if chosen is None:
            matches = [n for n in found if _matches(n.split("/"), variant)]
            if len(matches) != 1:
                raise _not_found(variant, str(src), found)
            log.warning("%s: %s is not where expected (%s); using %s", src, variant.name, variant.member, matches[0])
            chosen = next(m for m in tf.getmembers() if _member_name(m.name) == matches[0])
            chosen_dir = matches[0].rpartition("/")[0]
            _write_member(tf, chosen, out_dir / "best.pth", src)
    stale = out_dir / "hparams.yaml"
    if chosen_dir in yamls:
        with atomic_path(stale) as tmp:
            tmp.write_bytes(yamls[chosen_dir])
    elif stale.exists():
        stale.unlink()
    return out_dir / "best.pth"


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo, src: Path) -> bytes:
    fh = tf.extractfile(member)
    if fh is None:
        raise CheckpointError(f"{src}: cannot read member {member.name!r}")
    with fh:
        return fh.read()


def _write_member(tf: tarfile.TarFile, member: tarfile.TarInfo, target: Path, src: Path) -> None:
    """Copy one regular-file member to ``target`` (atomically), checking its size."""
    if not member.isfile():
        raise CheckpointError(f"{src}: member {member.name!r} is not a regular file (a link?); refusing it")
    fh = tf.extractfile(member)
    if fh is None:
        raise CheckpointError(f"{src}: cannot read member {member.name!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with fh, atomic_path(target) as tmp, tmp.open("wb") as out:
        shutil.copyfileobj(fh, out, 1 << 20)
    if target.stat().st_size != member.size:
        raise CheckpointError(f"{src}: member {member.name!r} is truncated; fetch the archive again")


def find_in_folder(root: str | os.PathLike[str], variant: PublishedModel) -> Path:
    """The variant's ``best.pth`` under an unpacked release folder.

    ``root`` may be the folder holding ``mtr/``, ``mtr/`` itself, any folder below it on the way to the variant,
    or the variant's own folder. Otherwise every ``best.pth`` below ``root`` is searched, as for an archive.

    Raises:
        CheckpointError: when none, or several, match (all found are listed).
    """
    base = Path(root)
    parts = variant.member.split("/")
    for k in range(len(parts)):
        cand = base.joinpath(*parts[k:])
        if cand.is_file():
            return cand
    found = sorted(p.relative_to(base).as_posix() for p in base.rglob("best.pth"))
    matches = [f for f in found if _matches(f.split("/"), variant)]
    if len(matches) != 1:
        raise _not_found(variant, str(base), found)
    log.warning("%s: %s is not where expected (%s); using %s", base, variant.name, variant.member, matches[0])
    return base / matches[0]


def _extracted(archive: Path, variant: PublishedModel, cache: Path, *, verify: bool) -> Path:
    """The variant's ``best.pth`` extracted into the cache (re-extracted when the archive changed)."""
    out_dir = cache / "extracted" / variant.objective / variant.folder
    stamp = out_dir / "source.json"
    st = archive.stat()
    source = {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if (out_dir / "best.pth").is_file() and stamp.is_file():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(stamp.read_text(encoding="utf-8")) == source:
                return out_dir / "best.pth"
    if verify and _sidecar(archive).is_file():
        verify_checksum(archive)
    log.info("extracting %s from %s", variant.member, archive)
    path = extract_from_archive(archive, variant, out_dir)
    write_json(stamp, source)
    return path


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return True
    return not name.endswith((".pth", ".pt", ".ckpt", ".bin")) and tarfile.is_tarfile(path)


def locate_weights(
    variant: PublishedModel,
    weights: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download_missing: bool = True,
    url: str = ARCHIVE_URL,
    progress: bool | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Find (extracting or downloading as needed) the variant's ``best.pth``.

    Args:
        variant: the registry entry.
        weights: an ``mtr.tar.gz``, an unpacked folder, or a ``best.pth``; default ``$MUSICSEARCH_TTMR_WEIGHTS``,
            then ``mtr/`` or ``mtr.tar.gz`` in the cache folder, then a download.
        cache_dir: cache folder (default :func:`default_cache_dir`).
        download_missing: download the archive when nothing local is found.
        url: where to download from.
        progress: download progress bar (see :func:`download`).

    Returns:
        ``(best_pth, source)``; ``source`` records where it came from (archive, member, URL).

    Raises:
        CheckpointError: if the given path is missing, nothing matches, or the download fails.
    """
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    given = weights or os.environ.get(ENV_WEIGHTS)
    source: dict[str, Any] = {"zenodo_record": ZENODO_RECORD, "variant": variant.name}
    if given:
        p = Path(given).expanduser()
        if not p.exists():
            raise CheckpointError(f"weights {p} do not exist; give an {ARCHIVE_NAME}, an mtr/ folder or a best.pth")
        if p.is_dir():
            best = find_in_folder(p, variant)
            source.update(kind="folder", folder=str(p))
        elif _is_archive(p):
            best = _extracted(p, variant, cache, verify=True)
            source.update(kind="archive", archive=str(p), member=variant.member)
        else:
            best = p
            source.update(kind="best.pth")
        return best, source
    if (cache / "mtr").is_dir():
        return find_in_folder(cache / "mtr", variant), {**source, "kind": "folder", "folder": str(cache / "mtr")}
    archive = cache / ARCHIVE_NAME
    if not archive.is_file():
        blocked = offline() and urllib.parse.urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1")
        if not download_missing or blocked:
            raise CheckpointError(
                f"{variant.name}: no weights given and {archive} does not exist. Fetch {url} (Zenodo record "
                f"{ZENODO_RECORD}) and put it there, or pass weights= an {ARCHIVE_NAME}, mtr/ folder or best.pth"
                + (" (downloads are off: MUSICSEARCH_OFFLINE=1)" if blocked else "")
            )
        log.info("downloading %s to %s", url, archive)
        download(url, archive, progress=progress)
        source["url"] = url
    best = _extracted(archive, variant, cache, verify=True)
    source.update(kind="archive", archive=str(archive), member=variant.member)
    return best, source


def offline() -> bool:
    """True when downloads from the network are switched off (``MUSICSEARCH_OFFLINE=1``; the test suite sets it).

    A server on this machine (127.0.0.1, localhost) is still reachable, which the download tests use."""
    return os.environ.get("MUSICSEARCH_OFFLINE", "") not in ("", "0")
