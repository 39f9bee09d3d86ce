"""Real, redistributable recordings gathered offline from Debian packages of free-game soundtracks.

Debian ships the soundtracks of many free games, either as separate ``*-music`` packages or inside the game's
data package, all in ``main``: the music is free under the Debian Free Software Guidelines and its licence is
written in the package's ``usr/share/doc/<pkg>/copyright``. :func:`gather_debian_music` fetches the packages
with ``apt-get download`` (the ordinary Debian client: no root needed, nothing installed), unpacks only their
music and copyright file into ``out_dir/<pkg>/``, and writes a manifest of unlabelled tracks (no tags, no
split) whose metadata carries the package, its version and the track's licence.

Rules (each one documented where it is applied):

* **What is music.** Audio files whose path inside the package matches the package's ``music`` pattern
  (:class:`DebianMusicPackage`; ``"*"`` for soundtrack packages, e.g. ``"*/music/*"`` for game data packages),
  and that last at least ``min_seconds`` (default :data:`MIN_SECONDS`, 20 s; shorter files are jingles and
  sound effects).
* **Archives.** ``.pk3`` / ``.zip`` files inside a package (Quake-engine games keep their music there) are
  opened with :func:`extract_zip_members` under the same traversal rules as the package itself; their audio
  lands in a folder named like the archive, and the archive is not kept.
* **Rendering.** Tracker modules (``.mod .xm .it .s3m``) are rendered once to FLAC with ffmpeg's libopenmpt
  demuxer; header-less PCM (``.raw``, only for packages that declare its :class:`RawPcm` format) likewise.
* **Duplicates.** Two files are the same recording when their bytes are equal (SHA-256), or when their
  durations differ by at most :data:`DUPLICATE_MAX_DURATION_GAP` seconds and their decoded fingerprints
  (:func:`audio_fingerprint`, compared by :func:`fingerprint_similarity`) reach
  :data:`DUPLICATE_MIN_SIMILARITY`. The first one in package order (then path order) is kept; the kept
  track's metadata lists the others under ``duplicates``.
* **Licence.** For a machine-readable (DEP-5) copyright file, the licence of the last ``Files:`` paragraph
  whose pattern matches the track's installed path (:func:`track_licence`); otherwise the package's
  :func:`licence_summary`.

Layout written::

    out_dir/debs/<pkg>_<version>_<arch>.deb       downloaded once, reused on later runs
    out_dir/<pkg>/usr/share/.../music/*.ogg        the audio, at its path inside the package
    out_dir/<pkg>/usr/share/.../x.pk3/music/*.ogg  audio from inside an archive of the package
    out_dir/<pkg>/usr/share/.../song.xm.flac       a tracker module rendered (the module is kept beside it)
    out_dir/<pkg>/usr/share/doc/<pkg>/copyright    the licence, kept beside the audio
    out_dir/<pkg>/.unpacked.json                   what was unpacked from which .deb, with which rules
    out_dir/<pkg>/.analysis.json                   per-file duration, hash and fingerprint (a cache)
    out_dir/manifest.jsonl                         one line per kept track, written atomically

A user's own music library needs none of this: ``musicsearch scan DIR`` (:func:`musicsearch.data.scan.
scan_directory`) makes its manifest; :func:`gather_folder` is that call for symmetry.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import itertools
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from musicsearch.audio.io import AUDIO_EXTENSIONS, audio_info, load_audio
from musicsearch.data.manifest import Track, write_manifest
from musicsearch.data.scan import ScanReport, scan_directory
from musicsearch.errors import AudioError, ManifestError
from musicsearch.fileio import atomic_dir, sha256_file, write_json

logger = logging.getLogger(__name__)

#: Files shorter than this (seconds) are not music here: jingles, stingers and sound effects.
MIN_SECONDS = 20.0
#: Tracker-module suffixes, rendered to FLAC with ffmpeg's libopenmpt demuxer.
TRACKER_EXTENSIONS: frozenset[str] = frozenset({".mod", ".xm", ".it", ".s3m"})
#: Archive suffixes opened inside packages (zip containers; ``.pk3`` is Quake's name for a zip).
ARCHIVE_EXTENSIONS: frozenset[str] = frozenset({".pk3", ".zip"})
#: Two files whose durations differ by more than this (seconds) are never duplicates by fingerprint.
DUPLICATE_MAX_DURATION_GAP = 1.0
#: Fingerprint similarity (mean over excerpts of the best-lag correlation) at or above which two files of
#: near-equal duration are one recording. Different pieces score near 0, re-encodings of one piece above 0.9.
DUPLICATE_MIN_SIMILARITY = 0.8
#: Longest rendering of one tracker module or raw file (seconds): modules that loop forever are cut here.
MAX_RENDER_SECONDS = 900.0
#: Most bytes written from one archive inside a package (guards against zip bombs).
MAX_ARCHIVE_BYTES = 8 << 30
#: Version of the unpack rules; a package unpacked under other rules is unpacked again.
_RULES = 2


@dataclasses.dataclass(frozen=True)
class RawPcm:
    """The format of header-less PCM files (``.raw``) a package ships.

    Attributes:
        sample_format: ffmpeg's raw format name, e.g. ``"u8"`` (unsigned 8 bit) or ``"s16le"``.
        sample_rate: samples per second per channel, in Hz.
        channels: interleaved channels.
    """

    sample_format: str
    sample_rate: int
    channels: int


@dataclasses.dataclass(frozen=True)
class DebianMusicPackage:
    """One Debian package that holds game music.

    Attributes:
        name: the binary package name, as ``apt-get download`` takes it.
        game: the game the music belongs to.
        version: the version checked with ``apt-cache show`` (Debian 12 "bookworm").
        download_mb: size of the ``.deb`` in megabytes (``apt-cache show``, field ``Size``).
        music: case-insensitive :mod:`fnmatch` pattern (``*`` crosses ``/``) on a file's path inside the
            package (inside an archive: the archive's path, ``/``, the member's path) that selects the music;
            ``"*"`` keeps every audio file.
        raw: format of the package's ``.raw`` files, or ``None`` when it has none worth reading.
    """

    name: str
    game: str
    version: str
    download_mb: float
    music: str = "*"
    raw: RawPcm | None = None


_P = DebianMusicPackage
#: Packages of Debian 12 (bookworm, ``main/games``) that hold music, checked with ``apt-cache show`` and
#: ``dpkg-deb -c`` on 2026-12-03. Soundtrack packages first, then game data packages (music folder only).
#: ``wesnoth-music`` is only a dependency package that pulls in ``wesnoth-1.16-music``.
DEBIAN_MUSIC_PACKAGES: tuple[DebianMusicPackage, ...] = (
    _P("singularity-music", "Endgame: Singularity", "007-2", 51.6),
    _P("nexuiz-music", "Nexuiz", "2.5.2-12", 84.0),
    _P("warzone2100-music", "Warzone 2100", "4.3.3-3", 85.7),
    _P("wesnoth-1.16-music", "Battle for Wesnoth", "1:1.16.9-1", 153.2),
    _P("ufoai-music", "UFO: Alien Invasion", "2.5-2", 210.2),
    _P("fb-music-high", "Frozen-Bubble", "0.1.2+nmu2", 1.5),
    _P("hyperrogue-music", "HyperRogue", "12.0q-1", 63.8, music="*/music/*"),  # sounds/ holds effects
    _P("planetblupi-music-ogg", "Planet Blupi", "1.14.2-3", 60.1),
    _P("drascula-music", "Drascula: The Vampire Strikes Back", "1.0+ds4-2", 36.4),
    _P("asc-music", "Advanced Strategic Command", "1.3-6", 10.3),
    _P("xblast-tnt-musics", "XBlast", "20050106-3.1", 4.4, raw=RawPcm("u8", 22050, 2)),
    # game data packages: only the music folder (sound effects would mostly fall under MIN_SECONDS anyway).
    # Not here: openarena-data (its missionpack/mp-pak0.pk3 holds a member named ../CREDITS, which the
    # traversal rule refuses), fretsonfire-songs-* (songs split into guitar / backing stems), lincity-ng-data
    # and boswars-data (no music files found in the .deb), openttd-openmsx (MIDI only).
    _P("0ad-data", "0 A.D.", "0.0.26-1", 1377.6, music="*/audio/music/*"),
    _P("widelands-data", "Widelands", "2:1.1-3", 381.4, music="*/music/*"),
    _P("supertuxkart-data", "SuperTuxKart", "1.4+dfsg-2", 627.7, music="*/music/*"),
    _P("supertux-data", "SuperTux", "0.6.3-2", 161.6, music="*/music/*"),
    _P("hedgewars-data", "Hedgewars", "1.0.2-6", 145.3, music="*/music/*"),
    _P("colobot-common-sounds", "Colobot", "0.2.0-2", 60.7, music="*/music/*"),
    _P("flare-game", "Flare", "1.14-1", 122.5, music="*/music/*"),
    _P("freedroidrpg-data", "FreedroidRPG", "1.0-1", 228.3, music="*/music/*"),
    _P("warmux-data", "Warmux", "1:11.04.1+repack2-4", 98.5, music="*/music/*"),
    _P("pushover-data", "Pushover", "0.0.5+git20180909-4", 32.4, music="*/themes/*"),
    _P("openclonk-data", "OpenClonk", "8.1-3", 112.5, music="*/music.ocg/*"),
    _P("megaglest-data", "MegaGlest", "3.13.0-3", 242.0, music="*/music/*"),
    _P("enigma-data", "Enigma", "1.20-dfsg.1-2.2", 30.3, music="*/music/*"),
    _P("extremetuxracer-data", "Extreme Tux Racer", "0.8.2-1", 40.6, music="*/music/*"),
    _P("xmoto-data", "X-Moto", "0.6.1+repack-9", 31.9, music="*/musics/*"),
    _P("fillets-ng-data", "Fish Fillets NG", "1.0.1-1.1", 70.6, music="*/music/*"),
    _P("frozen-bubble-data", "Frozen-Bubble", "2.212-11", 21.9, music="*/snd/*"),
    _P("btanks-data", "Battle Tanks", "0.9.8083-9", 26.4, music="*/tunes/*"),
    _P("powermanga-data", "Powermanga", "0.93.1-5", 9.9, music="*/sound/*"),
    _P("ri-li-data", "Ri-li", "2.0.1+ds2-2", 13.4),
    _P("pingus-data", "Pingus", "0.7.6-5.1", 11.7, music="*/music/*"),
    _P("tecnoballz-data", "TecnoballZ", "0.93.1-10", 1.5, music="*/musics/*"),
    _P("tomatoes-data", "I Have No Tomatoes", "1.55-10", 8.3, music="*/music/*"),
)
del _P

#: ``downloader(package, cache_dir) -> .deb path``: fetch one package's ``.deb`` into ``cache_dir``.
Downloader = Callable[[str, Path], Path]

_PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_MARKER = ".unpacked.json"
_ANALYSIS = ".analysis.json"
#: Lines of a free-form copyright file worth quoting: copyright notices and statements naming a licence.
_COPYRIGHT_LINE = re.compile(r"(?i)^copyright\s*(\(c\)|\u00a9|\d)")
_LICENCE_LINE = re.compile(
    r"(?i)\blicen[cs]ed under\b|^licen[cs]e:\s*\S|^this license:\s*\S"
    r"|\bGNU (lesser |library )?general public licen[cs]e\b|\bpublic domain\b|\bartistic licen[cs]e\b"
)


def package_spec(name: str) -> DebianMusicPackage:
    """The :data:`DEBIAN_MUSIC_PACKAGES` entry named ``name``, or a plain one (every audio file is music).

    Raises:
        ManifestError: if ``name`` is not a Debian package name.
    """
    _check_package_name(name)
    for p in DEBIAN_MUSIC_PACKAGES:
        if p.name == name:
            return p
    return DebianMusicPackage(name=name, game="", version="", download_mb=0.0)


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


def extract_zip_members(
    archive: str | os.PathLike[str],
    dest: Path,
    keep: Callable[[PurePosixPath], bool],
    *,
    where: str | None = None,
    max_bytes: int = MAX_ARCHIVE_BYTES,
) -> list[PurePosixPath]:
    """Write the regular-file members of a zip archive (``.zip``, ``.pk3``) that ``keep`` selects, safely.

    The same rules as :func:`extract_members`: an absolute or ``..`` member name refuses the whole archive,
    symbolic links and other non-regular members are never written, nothing lands outside ``dest``. The
    selected members may hold at most ``max_bytes`` together (by their headers; a member is never read past
    its declared size), so a zip bomb is refused before anything is written.

    Args:
        archive: the zip file.
        dest: folder to write into (created).
        keep: called with each member's normalised relative path; ``True`` writes the file.
        where: name of the archive for error messages (default: its path).
        max_bytes: most bytes the selected members may hold together.

    Returns:
        The relative paths written, in archive order.

    Raises:
        ManifestError: on an unsafe member name, an archive over ``max_bytes``, or an unreadable archive.
    """
    name = where or str(archive)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[PurePosixPath] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            chosen: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            for info in zf.infolist():
                if info.is_dir():
                    continue
                rel = _safe_member_path(info.filename, name)
                file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool recorded no Unix mode
                if file_type and file_type != stat.S_IFREG:  # symlinks (and devices) recorded by Unix zip tools
                    continue
                if keep(rel):
                    chosen.append((info, rel))
            total = sum(info.file_size for info, _ in chosen)
            if total > max_bytes:
                raise ManifestError(
                    f"{name}: the selected members would unpack to {total} bytes, over the {max_bytes}-byte "
                    "limit; refusing this archive"
                )
            for info, rel in chosen:
                target = root.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(root):
                    raise ManifestError(f"{name}: member {info.filename!r} resolves outside {dest}; refusing it")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(target, 0o644)
                written.append(rel)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError) as exc:
        raise ManifestError(f"{name}: not a readable zip archive ({exc}); delete the .deb and gather again") from None
    return written


def render_to_flac(src: Path, dst: Path, raw: RawPcm | None = None) -> None:
    """Render a tracker module, or header-less PCM in format ``raw``, to a FLAC file with ``ffmpeg``.

    Modules go through ffmpeg's libopenmpt demuxer, played once (no repeat), at most
    :data:`MAX_RENDER_SECONDS` long, 44.1 kHz stereo. ``dst`` is written atomically.

    Raises:
        AudioError: if ffmpeg is missing or cannot render the file (the message carries ffmpeg's error).
    """
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"cannot render {src}: ffmpeg is not installed; install it (`apt-get install ffmpeg`)")
    if raw is not None:
        fmt = ["-f", raw.sample_format, "-ar", str(raw.sample_rate), "-ac", str(raw.channels)]
    else:
        fmt = ["-f", "libopenmpt"]
    tmp = dst.with_name(f".{dst.name}.tmp.flac")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *fmt, "-i", str(src)]
    cmd += ["-t", f"{MAX_RENDER_SECONDS:.0f}", "-map", "0:a:0", "-ar", "44100", "-ac", "2", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=600)
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        err = proc.stderr.decode(errors="replace").strip()[:300]
        raise AudioError(f"ffmpeg could not render {src}: {err or 'no output'}; the file is left out")
    os.replace(tmp, dst)


def _music_matcher(pattern: str) -> Callable[[PurePosixPath], bool]:
    low = pattern.lower()
    return lambda rel: fnmatch.fnmatchcase(rel.as_posix().lower(), low)


def _inside(
    archive: PurePosixPath, wanted: frozenset[str] | set[str], is_music: Callable[[PurePosixPath], bool]
) -> Callable[[PurePosixPath], bool]:
    """The member filter of an archive: a wanted suffix, and music by its path through the archive."""
    return lambda member: member.suffix.lower() in wanted and is_music(archive / member)


def unpack_deb(
    deb: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    package: str,
    *,
    music: str = "*",
    raw: RawPcm | None = None,
) -> dict[str, str]:
    """Unpack a ``.deb``'s music and ``usr/share/doc/<package>/copyright`` into ``dest``; render what needs it.

    The data archive is read through ``dpkg-deb --fsys-tarfile`` and written by :func:`extract_members`;
    archives inside it by :func:`extract_zip_members` (into a folder named like the archive, which is then
    not kept), so a hostile package cannot write outside ``dest``. Tracker modules (and ``.raw`` files when
    ``raw`` is given) are rendered to ``<file>.flac`` beside them by :func:`render_to_flac`. Everything goes to
    a temporary folder that replaces ``dest`` only on success.

    Args:
        deb: the package file.
        dest: the package's folder.
        package: the package name (locates its copyright file).
        music: case-insensitive pattern selecting the music (see :class:`DebianMusicPackage`).
        raw: format of the package's ``.raw`` files; ``None`` leaves them out.

    Returns:
        ``{relative path: reason}`` of files that could not be rendered (empty when all went well).

    Raises:
        ManifestError: if ``dpkg-deb`` is missing or fails, or the package or an archive in it holds an
            unsafe member.
    """
    if shutil.which("dpkg-deb") is None:
        raise ManifestError("dpkg-deb is not installed; install the `dpkg` package to unpack .deb files")
    out = Path(dest)
    copyright_rel = PurePosixPath("usr/share/doc", package, "copyright")
    is_music = _music_matcher(music)
    wanted = AUDIO_EXTENSIONS | TRACKER_EXTENSIONS | ({".raw"} if raw is not None else set())

    def keep(rel: PurePosixPath) -> bool:
        suffix = rel.suffix.lower()
        return rel == copyright_rel or suffix in ARCHIVE_EXTENSIONS or (suffix in wanted and is_music(rel))

    failed: dict[str, str] = {}
    with atomic_dir(out) as tmp:
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            written = extract_members(proc.stdout, tmp, keep, where=str(deb))
            proc.stdout.read()  # drain so dpkg-deb exits cleanly
            err = proc.stderr.read().decode(errors="replace").strip()
        if proc.returncode != 0:
            raise ManifestError(f"`dpkg-deb --fsys-tarfile {deb}` failed: {err}; delete the .deb and gather again")
        files = [rel for rel in written if rel.suffix.lower() not in ARCHIVE_EXTENSIONS]
        for arc in (rel for rel in written if rel.suffix.lower() in ARCHIVE_EXTENSIONS):
            arc_path = tmp.joinpath(*arc.parts)
            inner = arc_path.with_name(arc_path.name + ".d")
            got = extract_zip_members(arc_path, inner, _inside(arc, wanted, is_music), where=f"{deb}:{arc}")
            arc_path.unlink()
            if got:
                inner.rename(arc_path)  # audio of x.pk3 lives in the folder x.pk3/
                files.extend(arc / m for m in got)
            else:
                shutil.rmtree(inner)
        for rel in files:
            suffix = rel.suffix.lower()
            if suffix in TRACKER_EXTENSIONS or suffix == ".raw":
                src = tmp.joinpath(*rel.parts)
                try:
                    render_to_flac(src, src.with_name(src.name + ".flac"), raw if suffix == ".raw" else None)
                except AudioError as exc:
                    failed[rel.as_posix()] = str(exc)
                    logger.warning("%s", exc)
    return failed


def licence_summary(text: str, *, max_lines: int = 5) -> str:
    """A one-line licence summary of a Debian ``copyright`` file.

    For a machine-readable file (DEP-5, first paragraph has ``Format:``), the distinct short names of the
    ``License:`` fields of its ``Files:`` paragraphs, in order of appearance, joined by ``"; "``. Otherwise
    (free-form file) up to ``max_lines`` lines: first at most two that name a licence (``... licensed under
    ...``, ``License: ...``, ``... GNU General Public License ...``, ``public domain``, a CC text's ``this
    License: Attribution, ...``), then the copyright notices (``Copyright (C) ...``), led by a note when the
    file holds a Creative Commons licence text, joined by ``" | "``; when no line qualifies, the first
    ``max_lines`` non-blank lines.
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
    named = [ln for ln in lines if _LICENCE_LINE.search(ln)][:2] + [ln for ln in lines if _COPYRIGHT_LINE.search(ln)]
    if re.search(r"(?i)creative\s+commons\s+public\s+license", text):
        named.insert(0, "Creative Commons public licence (full text in the copyright file)")
    return " | ".join((named or lines)[:max_lines])


def _dep5_files(text: str) -> list[tuple[list[str], str]] | None:
    """``[(patterns, licence)]`` of a DEP-5 copyright file's ``Files:`` paragraphs, or ``None`` if free-form."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if not paragraphs or not re.match(r"(?im)^format:", paragraphs[0]):
        return None
    out: list[tuple[list[str], str]] = []
    for para in paragraphs:
        files = re.search(r"(?ims)^files:(.*?)(?=^\S|\Z)", para)
        lic = re.search(r"(?im)^license:[ \t]*(\S[^\n]*)", para)
        if files and lic:
            out.append((files.group(1).split(), lic.group(1).strip()))
    return out


def track_licence(copyright_text: str, installed_path: str) -> str | None:
    """The licence a DEP-5 copyright file gives one installed file, or ``None`` (free-form file, no match).

    DEP-5 patterns name paths in the *source* tree, which differ from installed paths, so a pattern matches
    when it matches the installed path or any of its trailing parts (``data/music/*`` matches
    ``usr/share/games/x/data/music/a.ogg``); ``*`` crosses ``/``, as in DEP-5. A file from inside an archive
    is also tried without the archive's component (``base/0music.pk3/music/a.ogg`` as ``base/music/a.ogg``:
    the source tree before packing). As DEP-5 says, the last matching ``Files:`` paragraph wins.

    Args:
        copyright_text: the package's ``usr/share/doc/<pkg>/copyright``.
        installed_path: the file's ``/``-separated path inside the package.

    Returns:
        The ``License:`` short name, e.g. ``"CC-BY-SA-3.0"``, or ``None``.
    """
    paragraphs = _dep5_files(copyright_text)
    if not paragraphs:
        return None
    parts = PurePosixPath(installed_path).parts
    flat = tuple(p for p in parts if PurePosixPath(p).suffix.lower() not in ARCHIVE_EXTENSIONS)
    tails = {"/".join(seq[i:]) for seq in (parts, flat) for i in range(len(seq))}
    found: str | None = None
    for patterns, licence in paragraphs:
        if any(fnmatch.fnmatchcase(tail, pat) for pat in patterns for tail in tails):
            found = licence
    return found


# --------------------------------------------------------------------------------------------------- duplicates
#: Fingerprint sample rate (Hz), frame hop (samples: 0.1 s), excerpt length (s) and band edges (Hz).
FP_RATE = 8000
FP_HOP = 800
FP_EXCERPT_SECONDS = 6.0
FP_BAND_EDGES: tuple[float, ...] = tuple(float(x) for x in np.geomspace(100.0, 4000.0, 9))
#: Band energies are floored at this fraction (-30 dB) of the excerpt's largest band energy.
FP_FLOOR = 1e-3
#: Version of the fingerprint definition; cached fingerprints of another version are recomputed.
_FP_VERSION = 2
#: Where the excerpts sit, as fractions of the duration.
FP_POSITIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
#: Largest time shift (frames of 0.1 s) searched when comparing fingerprints.
FP_MAX_LAG = 10


def audio_fingerprint(path: str | os.PathLike[str], duration: float) -> np.ndarray:
    """A decoded-audio fingerprint: log band energies of three short excerpts.

    Excerpts of :data:`FP_EXCERPT_SECONDS` (at most a third of the file) centred at 25, 50 and 75 % of the
    duration are decoded to mono at :data:`FP_RATE` Hz and cut into 0.1 s frames (Hann window); each frame's
    power is summed in 8 log-spaced bands from 100 Hz to 4 kHz. Codec, bit rate, sample rate and channel
    count change this little; a different piece changes it completely.

    Args:
        path: an audio file.
        duration: its duration in seconds (:func:`~musicsearch.audio.io.audio_info`).

    Returns:
        ``(3, F, 8)`` float32 natural-log band energies, ``F = round(excerpt * 10)`` frames.

    Raises:
        AudioError: if the file cannot be decoded.
    """
    excerpt = min(FP_EXCERPT_SECONDS, duration / 3.0)
    n_frames = max(1, round(excerpt * FP_RATE / FP_HOP))
    freqs = np.fft.rfftfreq(FP_HOP, 1.0 / FP_RATE)
    masks = [(freqs >= lo) & (freqs < hi) for lo, hi in itertools.pairwise(FP_BAND_EDGES)]
    window = np.hanning(FP_HOP).astype(np.float32)
    out = np.empty((len(FP_POSITIONS), n_frames, len(masks)), dtype=np.float32)
    for k, pos in enumerate(FP_POSITIONS):
        start = max(0.0, pos * duration - excerpt / 2.0)
        wave = load_audio(path, sample_rate=FP_RATE, offset=start, duration=excerpt)
        wave = np.pad(wave[: n_frames * FP_HOP], (0, max(0, n_frames * FP_HOP - wave.size)))
        frames = wave.reshape(n_frames, FP_HOP) * window  # (F, hop)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (F, hop / 2 + 1)
        bands = np.stack([power[:, m].sum(axis=1) for m in masks], axis=1)  # (F, 8)
        # floor 30 dB under the excerpt's loudest band: codecs differ most in what they do with near-silence
        out[k] = np.log(np.maximum(bands, FP_FLOOR * bands.max()) + 1e-10)
    return out


def _zscore(x: np.ndarray) -> np.ndarray:
    """Per band (last axis), zero mean and unit variance over time (axis 0); constant bands become 0."""
    centred = x - x.mean(axis=0, keepdims=True)
    std = centred.std(axis=0, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 1e-6)


def fingerprint_similarity(a: np.ndarray, b: np.ndarray, *, max_lag: int = FP_MAX_LAG) -> float:
    """How alike two fingerprints of :func:`audio_fingerprint` are, in ``[-1, 1]``.

    For each excerpt and each shift ``l`` in ``[-max_lag, max_lag]`` frames, the overlapping frames are
    z-scored per band over time (constant bands become 0) and compared by the cosine of the two z-scored
    ``(frames, bands)`` matrices (0 when either is all zero); the excerpt scores its best shift
    (encoders add up to tens of ms of padding, and excerpt positions move with the duration). The result is
    the mean over excerpts. Fingerprints of different frame counts are compared over the shorter one.

    Args:
        a: ``(E, F1, B)`` fingerprint.
        b: ``(E, F2, B)`` fingerprint.
        max_lag: largest shift tried, in frames (kept below half the frames).

    Returns:
        The similarity; 1 for identical fingerprints.
    """
    n = min(a.shape[1], b.shape[1])
    lag_max = max(0, min(max_lag, n // 2 - 1))
    scores = []
    for x, y in zip(a[:, :n].astype(np.float64), b[:, :n].astype(np.float64), strict=True):
        best = -1.0
        for lag in range(-lag_max, lag_max + 1):
            xs = _zscore(x[max(0, lag) : n + min(0, lag)])
            ys = _zscore(y[max(0, -lag) : n + min(0, -lag)])
            norm = float(np.sqrt((xs * xs).sum() * (ys * ys).sum()))
            best = max(best, float((xs * ys).sum()) / norm if norm > 0 else 0.0)
        scores.append(best)
    return float(np.mean(scores))


@dataclasses.dataclass(frozen=True)
class FileFacts:
    """What the gatherer knows of one audio file (cached in ``<pkg>/.analysis.json``).

    Attributes:
        duration: seconds.
        sample_rate: Hz.
        sha256: hex digest of the file's bytes.
        fingerprint: :func:`audio_fingerprint`, or ``None`` for files too short to be kept.
        error: why the file could not be read (then the other fields are empty).
    """

    duration: float = 0.0
    sample_rate: int = 0
    sha256: str = ""
    fingerprint: np.ndarray | None = None
    error: str | None = None


def analyse_file(path: Path, *, min_seconds: float = MIN_SECONDS) -> FileFacts:
    """Duration, rate, byte hash, and (when at least ``min_seconds`` long) the fingerprint of one file.

    Never raises for a bad file: an unreadable one comes back with ``error`` set.
    """
    try:
        info = audio_info(path)
        fp = audio_fingerprint(path, info.duration) if info.duration >= min_seconds else None
    except AudioError as exc:
        return FileFacts(error=str(exc))
    return FileFacts(info.duration, info.sample_rate, sha256_file(path), fp)


def _facts_to_json(f: FileFacts) -> dict[str, Any]:
    fp = None
    if f.fingerprint is not None:
        fp = {
            "shape": list(f.fingerprint.shape),
            "f16": base64.b64encode(f.fingerprint.astype("<f2").tobytes()).decode(),
        }
    return {"duration": f.duration, "sample_rate": f.sample_rate, "sha256": f.sha256, "fp": fp, "error": f.error}


def _facts_from_json(d: dict[str, Any]) -> FileFacts:
    fp = None
    if d.get("fp"):
        raw = np.frombuffer(base64.b64decode(d["fp"]["f16"]), dtype="<f2")
        fp = raw.reshape(d["fp"]["shape"]).astype(np.float32)
    return FileFacts(float(d["duration"]), int(d["sample_rate"]), str(d["sha256"]), fp, d.get("error"))


def _audio_files(pkg_dir: Path) -> list[Path]:
    """Readable-suffix audio files under a package folder (hidden names skipped), sorted by relative path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                full = Path(dirpath) / name
                found.append((full.relative_to(pkg_dir).as_posix(), full))
    return [p for _, p in sorted(found)]


def _analyse_package(pkg_dir: Path, min_seconds: float) -> dict[str, FileFacts]:
    """:func:`analyse_file` for every audio file of a package folder, reusing ``.analysis.json``."""
    cache_path = pkg_dir / _ANALYSIS
    try:
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
        if cached.get("min_seconds") != min_seconds or cached.get("fingerprint") != _FP_VERSION:
            cached = {"files": {}}
    except (OSError, ValueError):
        cached = {"files": {}}
    entries: dict[str, Any] = cached.get("files", {})
    facts: dict[str, FileFacts] = {}
    fresh: dict[str, Any] = {}
    for f in _audio_files(pkg_dir):
        rel = f.relative_to(pkg_dir).as_posix()
        st = f.stat()
        key = [st.st_size, st.st_mtime_ns]
        hit = entries.get(rel)
        if hit is not None and hit.get("key") == key:
            facts[rel] = _facts_from_json(hit)
        else:
            facts[rel] = analyse_file(f, min_seconds=min_seconds)
        fresh[rel] = {"key": key, **_facts_to_json(facts[rel])}
    write_json(cache_path, {"min_seconds": min_seconds, "fingerprint": _FP_VERSION, "files": fresh}, indent=None)
    return facts


@dataclasses.dataclass(frozen=True)
class PackageReport:
    """What one package gave.

    Attributes:
        package: package name.
        version: its version (``dpkg-deb --field Version``).
        licence: :func:`licence_summary` of its copyright file, or ``"unknown ..."`` when it has none.
        copyright_file: path of the kept copyright file relative to ``out_dir``, or ``None``.
        files: number of tracks kept in the manifest.
        seconds: their total duration in seconds.
        skipped: ``(relative path, reason)`` of audio files that could not be read or rendered.
        too_short: number of readable files shorter than the minimum duration (left out).
        duplicates: ``(dropped track id, kept track id)`` of files that repeat an earlier track.
        downloaded: whether the ``.deb`` was fetched in this run (``False``: reused from the cache).
        unpacked: whether it was unpacked in this run (``False``: the earlier unpack was reused).
        error: why the whole package was left out (failed download, unsafe member), else ``None``.
    """

    package: str
    version: str
    licence: str
    copyright_file: str | None
    files: int
    seconds: float
    skipped: tuple[tuple[str, str], ...]
    too_short: int
    duplicates: tuple[tuple[str, str], ...]
    downloaded: bool
    unpacked: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class GatherReport:
    """Result of :func:`gather_debian_music`: the manifest written and one report per package."""

    manifest: Path
    packages: tuple[PackageReport, ...]

    @property
    def hours(self) -> float:
        """Total audio kept, in hours."""
        return sum(p.seconds for p in self.packages) / 3600.0


@dataclasses.dataclass
class _Candidate:
    track: Track
    facts: FileFacts


def _package_candidates(
    package: str, version: str, pkg_dir: Path, out_dir: Path, failed: dict[str, str], min_seconds: float
) -> tuple[list[_Candidate], PackageReport]:
    """The package's tracks of at least ``min_seconds`` (before removing duplicates) and its report."""
    copyright_path = pkg_dir / "usr" / "share" / "doc" / package / "copyright"
    text = ""
    if copyright_path.is_file():
        text = copyright_path.read_text(encoding="utf-8", errors="replace")
        licence = licence_summary(text)
        copyright_rel: str | None = copyright_path.relative_to(out_dir).as_posix()
    else:
        licence = "unknown (no usr/share/doc/<pkg>/copyright in the package)"
        copyright_rel = None
        logger.warning("%s carries no copyright file; its licence is unknown", package)
    facts = _analyse_package(pkg_dir, min_seconds)
    skipped = sorted(failed.items())
    candidates: list[_Candidate] = []
    too_short = 0
    stems = [PurePosixPath(rel).with_suffix("").as_posix() for rel in facts]
    for (rel, f), stem in zip(facts.items(), stems, strict=True):
        if f.error is not None:
            skipped.append((rel, f.error))
            logger.warning("skipping %s/%s: %s", package, rel, f.error)
            continue
        if f.duration < min_seconds:
            too_short += 1
            continue
        base = rel[: -len(".flac")] if rel.lower().endswith(".flac") else ""
        rendered_from = base if PurePosixPath(base).suffix.lower() in (TRACKER_EXTENSIONS | {".raw"}) else None
        source_rel = rendered_from or rel
        name = stem if stems.count(stem) == 1 else rel
        metadata: dict[str, Any] = {
            "duration": round(f.duration, 3),
            "sample_rate": f.sample_rate,
            "title": PurePosixPath(source_rel).stem,
            "source": "debian",
            "package": package,
            "version": version,
            "licence": (track_licence(text, source_rel) if text else None) or licence,
            "copyright_file": copyright_rel,
            "sha256": f.sha256,
        }
        if rendered_from is not None:
            metadata["rendered_from"] = rendered_from
        track = Track(track_id=f"{package}/{name}", audio_path=str(pkg_dir / rel), metadata=metadata)
        candidates.append(_Candidate(track, f))
    report = PackageReport(
        package=package,
        version=version,
        licence=licence,
        copyright_file=copyright_rel,
        files=len(candidates),
        seconds=sum(c.facts.duration for c in candidates),
        skipped=tuple(skipped),
        too_short=too_short,
        duplicates=(),
        downloaded=False,
        unpacked=False,
    )
    return candidates, report


def remove_duplicates(
    items: Sequence[tuple[float, str, np.ndarray | None]],
    *,
    max_gap: float = DUPLICATE_MAX_DURATION_GAP,
    min_similarity: float = DUPLICATE_MIN_SIMILARITY,
) -> list[int | None]:
    """For each item, the index of the earlier item it duplicates, or ``None`` when it is kept.

    Item ``j`` duplicates kept item ``i < j`` when their SHA-256 digests are equal, or when their durations
    differ by at most ``max_gap`` seconds and :func:`fingerprint_similarity` of their fingerprints is at least
    ``min_similarity``. Items are only ever compared with kept ones, so the first of a group survives.

    Args:
        items: ``(duration in s, sha256 hex, fingerprint or None)`` in priority order.
        max_gap: largest duration difference of a fingerprint duplicate, in seconds.
        min_similarity: fingerprint similarity threshold.

    Returns:
        One entry per item.
    """
    out: list[int | None] = [None] * len(items)
    by_hash: dict[str, int] = {}
    kept: list[int] = []  # indices of kept items, compared by duration
    for j, (dur, digest, fp) in enumerate(items):
        if digest in by_hash:
            out[j] = by_hash[digest]
            continue
        if fp is not None:
            for i in kept:
                other = items[i]
                if other[2] is not None and abs(other[0] - dur) <= max_gap:
                    if fingerprint_similarity(other[2], fp) >= min_similarity:
                        out[j] = i
                        break
        if out[j] is None:
            by_hash[digest] = j
            kept.append(j)
    return out


def _refused(name: str, error: str) -> PackageReport:
    return PackageReport(name, "", "", None, 0, 0.0, (), 0, (), False, False, error=error)


def _gather_package(
    spec: DebianMusicPackage, out: Path, cache: Path, downloader: Downloader, min_seconds: float
) -> tuple[list[_Candidate], PackageReport]:
    """Download (if needed), unpack (if needed) and analyse one package: its candidate tracks and report."""
    name = spec.name
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
    stamp: dict[str, Any] = {
        "deb": deb.name,
        "size": deb.stat().st_size,
        "version": version,
        "rules": _RULES,
        "music": spec.music,
        "raw": dataclasses.asdict(spec.raw) if spec.raw else None,
    }
    old = _read_marker(marker)
    unpacked = False
    if old is None or {k: v for k, v in old.items() if k != "failed"} != stamp:
        logger.info("unpacking %s", deb.name)
        failed = unpack_deb(deb, pkg_dir, name, music=spec.music, raw=spec.raw)
        write_json(marker, {**stamp, "failed": failed})
        unpacked = True
    else:
        failed = dict(old.get("failed") or {})
    logger.info("analysing %s", name)
    got, report = _package_candidates(name, version, pkg_dir, out, failed, min_seconds)
    if not got:
        logger.warning("%s holds no music of at least %.0f s", name, min_seconds)
    return got, dataclasses.replace(report, downloaded=downloaded, unpacked=unpacked)


def gather_debian_music(
    out_dir: str | os.PathLike[str],
    packages: Sequence[str | DebianMusicPackage] | None = None,
    *,
    downloader: Downloader = apt_download,
    manifest_name: str = "manifest.jsonl",
    min_seconds: float = MIN_SECONDS,
) -> GatherReport:
    """Download, unpack and list the music of Debian packages, with each track's licence, without duplicates.

    Idempotent: a ``.deb`` already in ``out_dir/debs`` is not fetched again, a package folder whose marker
    names the same ``.deb`` and rules is not unpacked again, and file analyses are cached; the manifest is
    rewritten (atomically) from the folders.

    Args:
        out_dir: folder for the ``.deb`` cache, the unpacked packages and the manifest.
        packages: package names or :class:`DebianMusicPackage` entries (earlier ones win duplicates);
            default every package of :data:`DEBIAN_MUSIC_PACKAGES`. A name is looked up there; one not in the
            table is gathered with every audio file as music.
        downloader: ``downloader(package, cache_dir) -> .deb path``; default :func:`apt_download`.
        manifest_name: file name of the manifest inside ``out_dir``.
        min_seconds: shortest file kept, in seconds (shorter ones are sound effects and jingles).

    Returns:
        A :class:`GatherReport`; ``report.manifest`` is the manifest path. Tracks have no tags and no split;
        their metadata holds ``duration``, ``sample_rate``, ``title``, ``source`` (``"debian"``), ``package``,
        ``version``, ``licence`` (this track's, see :func:`track_licence`), ``copyright_file`` (relative to
        ``out_dir``), ``sha256``, ``rendered_from`` for rendered modules, and ``duplicates`` (ids of the
        copies left out) where there were any.

    A package that cannot be downloaded or unpacked, or holds an unsafe member, is left out with a warning
    and its report's ``error`` set; the others are gathered.

    Raises:
        ManifestError: on a bad package name or minimum, or when no music is found at all.
    """
    if not (np.isfinite(min_seconds) and min_seconds >= 0):
        raise ManifestError(f"min_seconds must be a non-negative number of seconds, got {min_seconds!r}")
    out = Path(os.path.abspath(out_dir))
    given = list(packages) if packages is not None else list(DEBIAN_MUSIC_PACKAGES)
    if not given:
        raise ManifestError("no packages given; name at least one, e.g. singularity-music")
    by_name: dict[str, DebianMusicPackage] = {}
    for item in given:
        spec = item if isinstance(item, DebianMusicPackage) else package_spec(item)
        _check_package_name(spec.name)
        by_name.setdefault(spec.name, spec)
    specs = list(by_name.values())
    names = list(by_name)
    cache = out / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    candidates: list[_Candidate] = []
    reports: list[PackageReport] = []
    for spec in specs:
        try:
            got, report = _gather_package(spec, out, cache, downloader, min_seconds)
        except ManifestError as exc:  # one refused package (unsafe, failed download) does not stop the others
            logger.warning("%s left out: %s", spec.name, exc)
            reports.append(_refused(spec.name, str(exc)))
            continue
        candidates.extend(got)
        reports.append(report)
    if not candidates:
        raise ManifestError(
            f"no readable music of at least {min_seconds:g} s in packages {', '.join(names)}; "
            "are these music packages (or is --min-seconds too high)?"
        )
    dup_of = remove_duplicates([(c.facts.duration, c.facts.sha256, c.facts.fingerprint) for c in candidates])
    dropped: dict[str, list[tuple[str, str]]] = {}
    for j, i in enumerate(dup_of):
        if i is not None:
            kept, copy = candidates[i].track, candidates[j].track
            kept.metadata.setdefault("duplicates", []).append(copy.track_id)
            dropped.setdefault(copy.metadata["package"], []).append((copy.track_id, kept.track_id))
            logger.info("%s repeats %s; left out", copy.track_id, kept.track_id)
    tracks = [c.track for c, i in zip(candidates, dup_of, strict=True) if i is None]
    final: list[PackageReport] = []
    for r in reports:
        mine = [t for t in tracks if t.metadata["package"] == r.package]
        final.append(
            dataclasses.replace(
                r,
                files=len(mine),
                seconds=sum(float(t.metadata["duration"]) for t in mine),
                duplicates=tuple(dropped.get(r.package, [])),
            )
        )
    manifest = out / manifest_name
    write_manifest(manifest, tracks)
    return GatherReport(manifest=manifest, packages=tuple(final))


def _read_marker(marker: Path) -> dict[str, Any] | None:
    """The unpack marker's content, or ``None`` when missing or corrupt."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def gather_folder(root: str | os.PathLike[str], **kwargs: Any) -> ScanReport:
    """The user's own library: exactly :func:`musicsearch.data.scan.scan_directory` (``musicsearch scan DIR``).

    Args:
        root: folder of audio files.
        **kwargs: passed to :func:`~musicsearch.data.scan.scan_directory` (``tags_csv``, ``split_ratios``, ...).

    Returns:
        The scan's report; write it with :func:`~musicsearch.data.manifest.write_manifest`.
    """
    return scan_directory(root, **kwargs)
