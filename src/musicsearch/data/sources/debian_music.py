"""Real, redistributable recordings gathered offline from Debian packages of free-game soundtracks.

Debian ships the soundtracks of several free games as separate ``*-music`` packages in ``main``, so the
music is free under the Debian Free Software Guidelines and its licence is written in the package's
``usr/share/doc/<pkg>/copyright``. :func:`gather_debian_music` fetches them with ``apt-get download`` (the
ordinary Debian client: no root needed, nothing installed), unpacks only the audio files and the copyright
file of each package into ``out_dir/<pkg>/``, and writes a manifest of unlabelled tracks (no tags, no split)
whose metadata carries the package, its version and its licence.

Layout written::

    out_dir/debs/<pkg>_<version>_<arch>.deb       downloaded once, reused on later runs
    out_dir/<pkg>/usr/share/.../music/*.ogg        the audio, at its path inside the package
    out_dir/<pkg>/usr/share/doc/<pkg>/copyright    the licence, kept beside the audio
    out_dir/<pkg>/.unpacked.json                   what was unpacked from which .deb (skip marker)
    out_dir/manifest.jsonl                         one line per audio file

A user's own music library needs none of this: ``musicsearch scan DIR`` (:func:`musicsearch.data.scan.
scan_directory`) makes its manifest; :func:`gather_folder` is that call for symmetry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from musicsearch.audio.io import AUDIO_EXTENSIONS, audio_info
from musicsearch.data.manifest import Track, write_manifest
from musicsearch.data.scan import ScanReport, find_audio_files, scan_directory
from musicsearch.errors import AudioError, ManifestError
from musicsearch.fileio import write_json

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DebianMusicPackage:
    """One Debian package that holds a game soundtrack.

    Attributes:
        name: the binary package name, as ``apt-get download`` takes it.
        game: the game the music belongs to.
        version: the version checked with ``apt-cache policy`` (Debian 12 "bookworm").
        download_mb: size of the ``.deb`` in megabytes (``apt-cache show``, field ``Size``).
    """

    name: str
    game: str
    version: str
    download_mb: float


#: Soundtrack packages of Debian 12 (bookworm, section ``main/games``), checked with ``apt-cache policy`` /
#: ``apt-cache show`` on 2026-11-26. Smallest first. ``wesnoth-music`` is only a dependency package that
#: pulls in ``wesnoth-1.16-music``, so the versioned name is listed.
DEBIAN_MUSIC_PACKAGES: tuple[DebianMusicPackage, ...] = (
    DebianMusicPackage("singularity-music", "Endgame: Singularity", "007-2", 51.6),
    DebianMusicPackage("nexuiz-music", "Nexuiz", "2.5.2-12", 84.0),
    DebianMusicPackage("warzone2100-music", "Warzone 2100", "4.3.3-3", 85.7),
    DebianMusicPackage("wesnoth-1.16-music", "Battle for Wesnoth", "1:1.16.9-1", 153.2),
    DebianMusicPackage("ufoai-music", "UFO: Alien Invasion", "2.5-2", 210.2),
)

#: ``downloader(package, cache_dir) -> .deb path``: fetch one package's ``.deb`` into ``cache_dir``.
Downloader = Callable[[str, Path], Path]

_PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_MARKER = ".unpacked.json"
#: Lines of a free-form copyright file worth quoting: copyright notices and statements naming a licence.
_LICENCE_LINE = re.compile(
    r"(?i)^copyright\s*(\(c\)|\u00a9|\d)|\blicen[cs]ed under\b|^licen[cs]e:\s*\S|^this license:\s*\S"
)


def _check_package_name(name: str) -> None:
    if not _PKG_NAME.match(name):
        raise ManifestError(
            f"{name!r} is not a Debian package name (lower-case letters, digits, '+', '-', '.'); "
            f"known soundtrack packages: {', '.join(p.name for p in DEBIAN_MUSIC_PACKAGES)}"
        )


def cached_deb(package: str, cache_dir: str | os.PathLike[str]) -> Path | None:
    """The newest ``<package>_*.deb`` already in ``cache_dir``, or ``None``."""
    found = sorted(Path(cache_dir).glob(f"{package}_*.deb"))
    return found[-1] if found else None


def apt_download(package: str, cache_dir: Path) -> Path:
    """Fetch ``package``'s ``.deb`` into ``cache_dir`` with ``apt-get download`` (no root, nothing installed).

    Args:
        package: a binary package name known to the local apt lists (run ``apt-get update`` once if not).
        cache_dir: folder the ``.deb`` is written to.

    Returns:
        The path of the downloaded ``.deb``.

    Raises:
        ManifestError: if ``apt-get`` is missing or the download fails (message carries apt's error).
    """
    _check_package_name(package)
    if shutil.which("apt-get") is None:
        raise ManifestError("apt-get is not installed; gathering Debian music needs a Debian or Ubuntu system")
    cache_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", package], cwd=cache_dir, capture_output=True, text=True, check=False)
    deb = cached_deb(package, cache_dir)
    if proc.returncode != 0 or deb is None:
        raise ManifestError(
            f"`apt-get download {package}` failed: {proc.stderr.strip() or proc.stdout.strip()}; "
            f"check the name with `apt-cache policy {package}` and run `apt-get update` if the lists are stale"
        )
    return deb


def deb_field(deb: str | os.PathLike[str], field: str) -> str:
    """One control field of a ``.deb`` (``dpkg-deb --field``), e.g. ``"Version"``.

    Raises:
        ManifestError: if ``dpkg-deb`` is missing or cannot read the file.
    """
    if shutil.which("dpkg-deb") is None:
        raise ManifestError("dpkg-deb is not installed; install the `dpkg` package to unpack .deb files")
    proc = subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ManifestError(f"{deb} is not a readable .deb: {proc.stderr.strip()}; delete it and gather again")
    return proc.stdout.strip()


def _safe_member_path(name: str, where: str) -> PurePosixPath:
    """The relative path of a tar member, refusing absolute paths and ``..`` components."""
    raw = PurePosixPath(name)
    parts = [p for p in raw.parts if p not in ("", ".")]
    if raw.is_absolute() or ".." in parts or not parts:
        raise ManifestError(
            f"{where}: member {name!r} would be written outside the unpack folder; refusing this package"
        )
    return PurePosixPath(*parts)


def extract_members(
    tar_stream: IO[bytes], dest: Path, keep: Callable[[PurePosixPath], bool], *, where: str = "archive"
) -> list[PurePosixPath]:
    """Write the regular-file members of a tar stream that ``keep`` selects under ``dest``, safely.

    Every member name is checked (absolute paths and ``..`` refuse the whole archive); links, devices and
    other non-regular members are never written, so nothing can land outside ``dest``.

    Args:
        tar_stream: an uncompressed or compressed tar byte stream (read sequentially).
        dest: folder to write into (created).
        keep: called with each member's normalised relative path; ``True`` writes the file.
        where: name of the archive for error messages.

    Returns:
        The relative paths written, in archive order.

    Raises:
        ManifestError: on an unsafe member name or an unreadable archive.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[PurePosixPath] = []
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|*") as tar:
            for member in tar:
                rel = _safe_member_path(member.name, where) if member.name not in ("", ".", "./") else None
                if rel is None or not member.isfile() or not keep(rel):
                    continue
                target = root.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(root):  # a symlinked folder could only come from us
                    raise ManifestError(f"{where}: member {member.name!r} resolves outside {dest}; refusing it")
                src = tar.extractfile(member)
                if src is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(target, 0o644)
                written.append(rel)
    except tarfile.TarError as exc:
        raise ManifestError(f"{where}: not a readable tar archive ({exc}); delete it and gather again") from None
    return written


def unpack_deb(deb: str | os.PathLike[str], dest: str | os.PathLike[str], package: str) -> list[PurePosixPath]:
    """Unpack the audio files and ``usr/share/doc/<package>/copyright`` of a ``.deb`` into ``dest``.

    The data archive is read through ``dpkg-deb --fsys-tarfile`` and written by :func:`extract_members`, so
    a hostile package cannot write outside ``dest``. Unpacking goes to a temporary folder that replaces
    ``dest`` only on success.

    Returns:
        The relative paths written.

    Raises:
        ManifestError: if ``dpkg-deb`` is missing or fails, or the package holds an unsafe member.
    """
    if shutil.which("dpkg-deb") is None:
        raise ManifestError("dpkg-deb is not installed; install the `dpkg` package to unpack .deb files")
    out = Path(dest)
    copyright_rel = PurePosixPath("usr/share/doc", package, "copyright")

    def keep(rel: PurePosixPath) -> bool:
        return rel.suffix.lower() in AUDIO_EXTENSIONS or rel == copyright_rel

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            written = extract_members(proc.stdout, tmp, keep, where=str(deb))
            proc.stdout.read()  # drain so dpkg-deb exits cleanly
            err = proc.stderr.read().decode(errors="replace").strip()
        if proc.returncode != 0:
            raise ManifestError(f"`dpkg-deb --fsys-tarfile {deb}` failed: {err}; delete the .deb and gather again")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def licence_summary(text: str, *, max_lines: int = 5) -> str:
    """A one-line licence summary of a Debian ``copyright`` file.

    For a machine-readable file (DEP-5, first paragraph has ``Format:``), the distinct short names of the
    ``License:`` fields of its ``Files:`` paragraphs, in order of appearance, joined by ``"; "``. Otherwise
    (free-form file) up to ``max_lines`` lines that are copyright notices or name a licence (``Copyright (C)
    ...``, ``... licensed under ...``, ``License: ...``, a CC text's ``this License: Attribution, ...``), led
    by a note when the file holds a Creative Commons licence text, joined by ``" | "``; when no line
    qualifies, the first ``max_lines`` non-blank lines.
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if paragraphs and re.match(r"(?im)^format:", paragraphs[0]):
        names: list[str] = []
        fallback: list[str] = []
        for para in paragraphs:
            lic = re.search(r"(?im)^license:[ \t]*(\S[^\n]*)", para)
            if lic is None:
                continue
            name = lic.group(1).strip()
            bucket = names if re.search(r"(?im)^files:", para) else fallback
            if name not in bucket:
                bucket.append(name)
        if names or fallback:
            return "; ".join(names or fallback)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    named = [ln for ln in lines if _LICENCE_LINE.search(ln)]
    if re.search(r"(?i)creative\s+commons\s+public\s+license", text):
        named.insert(0, "Creative Commons public licence (full text in the copyright file)")
    return " | ".join((named or lines)[:max_lines])


@dataclasses.dataclass(frozen=True)
class PackageReport:
    """What one package gave.

    Attributes:
        package: package name.
        version: its version (``dpkg-deb --field Version``).
        licence: :func:`licence_summary` of its copyright file, or ``"unknown ..."`` when it has none.
        copyright_file: path of the kept copyright file relative to ``out_dir``, or ``None``.
        files: number of readable audio files.
        seconds: their total duration in seconds.
        skipped: ``(relative path, reason)`` of audio files that could not be read.
        downloaded: whether the ``.deb`` was fetched in this run (``False``: reused from the cache).
        unpacked: whether it was unpacked in this run (``False``: the earlier unpack was reused).
    """

    package: str
    version: str
    licence: str
    copyright_file: str | None
    files: int
    seconds: float
    skipped: tuple[tuple[str, str], ...]
    downloaded: bool
    unpacked: bool


@dataclasses.dataclass(frozen=True)
class GatherReport:
    """Result of :func:`gather_debian_music`: the manifest written and one report per package."""

    manifest: Path
    packages: tuple[PackageReport, ...]

    @property
    def hours(self) -> float:
        """Total audio in hours."""
        return sum(p.seconds for p in self.packages) / 3600.0


def _package_tracks(package: str, version: str, pkg_dir: Path, out_dir: Path) -> tuple[list[Track], PackageReport]:
    copyright_path = pkg_dir / "usr" / "share" / "doc" / package / "copyright"
    if copyright_path.is_file():
        licence = licence_summary(copyright_path.read_text(encoding="utf-8", errors="replace"))
        copyright_rel: str | None = copyright_path.relative_to(out_dir).as_posix()
    else:
        licence = "unknown (no usr/share/doc/<pkg>/copyright in the package)"
        copyright_rel = None
        logger.warning("%s carries no copyright file; its licence is unknown", package)
    tracks: list[Track] = []
    skipped: list[tuple[str, str]] = []
    files = find_audio_files(pkg_dir)
    stems = [f.relative_to(pkg_dir).with_suffix("").as_posix() for f in files]
    for f, stem in zip(files, stems, strict=True):
        rel = f.relative_to(pkg_dir).as_posix()
        try:
            info = audio_info(f)
        except AudioError as exc:
            skipped.append((rel, str(exc)))
            logger.warning("skipping %s: %s", rel, exc)
            continue
        name = stem if stems.count(stem) == 1 else rel
        metadata: dict[str, Any] = {
            "duration": round(info.duration, 3),
            "sample_rate": info.sample_rate,
            "title": f.stem,
            "source": "debian",
            "package": package,
            "version": version,
            "licence": licence,
            "copyright_file": copyright_rel,
        }
        tracks.append(Track(track_id=f"{package}/{name}", audio_path=str(f), metadata=metadata))
    report = PackageReport(
        package=package,
        version=version,
        licence=licence,
        copyright_file=copyright_rel,
        files=len(tracks),
        seconds=sum(float(t.metadata["duration"]) for t in tracks),
        skipped=tuple(skipped),
        downloaded=False,
        unpacked=False,
    )
    return tracks, report


def gather_debian_music(
    out_dir: str | os.PathLike[str],
    packages: Sequence[str] | None = None,
    *,
    downloader: Downloader = apt_download,
    manifest_name: str = "manifest.jsonl",
) -> GatherReport:
    """Download, unpack and list the audio of Debian soundtrack packages, with each package's licence.

    Idempotent: a ``.deb`` already in ``out_dir/debs`` is not fetched again, and a package folder whose
    marker names the same ``.deb`` is not unpacked again; the manifest is rewritten from the folders.

    Args:
        out_dir: folder for the ``.deb`` cache, the unpacked packages and the manifest.
        packages: package names; default every package of :data:`DEBIAN_MUSIC_PACKAGES` (about 590 MB).
        downloader: ``downloader(package, cache_dir) -> .deb path``; default :func:`apt_download`.
        manifest_name: file name of the manifest inside ``out_dir``.

    Returns:
        A :class:`GatherReport`; ``report.manifest`` is the manifest path. Tracks have no tags and no split;
        their metadata holds ``duration``, ``sample_rate``, ``title``, ``source`` (``"debian"``), ``package``,
        ``version``, ``licence`` and ``copyright_file`` (relative to ``out_dir``).

    Raises:
        ManifestError: on a bad package name, a failed download or unpack, an unsafe package, or when no
            audio file is found at all.
    """
    out = Path(os.path.abspath(out_dir))
    names = list(packages) if packages is not None else [p.name for p in DEBIAN_MUSIC_PACKAGES]
    if not names:
        raise ManifestError("no packages given; name at least one, e.g. singularity-music")
    for name in names:
        _check_package_name(name)
    cache = out / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    all_tracks: list[Track] = []
    reports: list[PackageReport] = []
    for name in dict.fromkeys(names):
        deb = cached_deb(name, cache)
        downloaded = deb is None
        if deb is None:
            logger.info("downloading %s", name)
            deb = Path(downloader(name, cache))
            if not deb.is_file():
                raise ManifestError(f"downloading {name} gave no file at {deb}")
        version = deb_field(deb, "Version")
        pkg_dir = out / name
        marker = pkg_dir / _MARKER
        stamp = {"deb": deb.name, "size": deb.stat().st_size, "version": version}
        unpacked = False
        if not _same_stamp(marker, stamp):
            logger.info("unpacking %s", deb.name)
            unpack_deb(deb, pkg_dir, name)
            write_json(marker, stamp)
            unpacked = True
        tracks, report = _package_tracks(name, version, pkg_dir, out)
        if not tracks:
            logger.warning("%s holds no readable audio files", name)
        all_tracks.extend(tracks)
        reports.append(dataclasses.replace(report, downloaded=downloaded, unpacked=unpacked))
    if not all_tracks:
        raise ManifestError(f"no readable audio in packages {', '.join(names)}; are these music packages?")
    manifest = out / manifest_name
    write_manifest(manifest, all_tracks)
    return GatherReport(manifest=manifest, packages=tuple(reports))


def _same_stamp(marker: Path, stamp: dict[str, Any]) -> bool:
    """Whether the unpack marker names the same .deb (a missing or corrupt marker is not)."""
    try:
        return bool(json.loads(marker.read_text(encoding="utf-8")) == stamp)
    except (OSError, ValueError):
        return False


def gather_folder(root: str | os.PathLike[str], **kwargs: Any) -> ScanReport:
    """The user's own library: exactly :func:`musicsearch.data.scan.scan_directory` (``musicsearch scan DIR``).

    Args:
        root: folder of audio files.
        **kwargs: passed to :func:`~musicsearch.data.scan.scan_directory` (``tags_csv``, ``split_ratios``, ...).

    Returns:
        The scan's report; write it with :func:`~musicsearch.data.manifest.write_manifest`.
    """
    return scan_directory(root, **kwargs)
