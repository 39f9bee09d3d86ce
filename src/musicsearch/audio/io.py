"""Decode audio files to mono float32 waveforms at 16 kHz.

Decoding goes through libsndfile (via ``soundfile``), which reads WAV, FLAC, AIFF, Ogg/Vorbis, Ogg/Opus and MP3.
Formats it cannot read (M4A/AAC, WMA) fall back to an ``ffmpeg`` subprocess when ``ffmpeg`` and ``ffprobe`` are
on ``PATH``. ``.npy`` files holding a 16 kHz float waveform (the layout of the ECALS release) load directly.

Every waveform returned is ``(T,)`` float32, mono (channels averaged), finite, at the requested rate (resampled
with soxr, quality ``"HQ"``, when the file's rate differs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from musicsearch.errors import AudioError

__all__ = [
    "AUDIO_EXTENSIONS",
    "FFMPEG_EXTENSIONS",
    "MAX_SAMPLE_MAGNITUDE",
    "NPY_SAMPLE_RATE",
    "SOUNDFILE_EXTENSIONS",
    "AudioInfo",
    "audio_info",
    "ffmpeg_available",
    "load_audio",
    "load_audio_windows",
    "resample",
    "segment_samples",
]

logger = logging.getLogger(__name__)

#: Suffixes libsndfile 1.2 decodes.
SOUNDFILE_EXTENSIONS: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
#: Suffixes only the ``ffmpeg`` fallback decodes.
FFMPEG_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".aac", ".wma"})
#: Suffixes ``musicsearch scan`` collects (lower case). ``.npy`` arrays load with :func:`load_audio` but are not
#: scanned for, since a folder of arrays is not necessarily a folder of waveforms.
AUDIO_EXTENSIONS: frozenset[str] = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
#: The sample rate a ``.npy`` waveform is assumed to have (the ECALS release stores 16 kHz mono float32).
NPY_SAMPLE_RATE = 16000
#: Largest sample magnitude accepted (+80 dB over full scale). Float files may exceed 1.0 a little; beyond this
#: the data is garbage (random bytes read as float32 reach 1e38), and the model's output would be NaN.
MAX_SAMPLE_MAGNITUDE = 1e4


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding.

    Attributes:
        duration: length in seconds (``frames / sample_rate``).
        sample_rate: samples per second of the stored audio.
        channels: number of channels.
        format: container name, e.g. ``"FLAC"``, ``"OGG"``, ``"MP3"``, ``"NPY"`` or ffmpeg's format name.
        frames: number of samples per channel.
    """

    duration: float
    sample_rate: int
    channels: int
    format: str
    frames: int


def ffmpeg_available() -> bool:
    """Whether the ``ffmpeg`` fallback can run (both ``ffmpeg`` and ``ffprobe`` are on ``PATH``)."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _check_file(path: Path) -> None:
    """Raise :class:`AudioError` if ``path`` is missing, not a file, or empty."""
    if not path.exists():
        raise AudioError(
            f"audio file {path} does not exist; check the path (manifest paths are relative to the manifest)"
        )
    if not path.is_file():
        raise AudioError(f"audio path {path} is not a file; give the path of an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); re-export or re-download it, or remove it")


def _unreadable(path: Path, reason: str) -> AudioError:
    """The error for a file neither libsndfile nor ffmpeg could decode."""
    suffix = path.suffix.lower()
    if suffix in FFMPEG_EXTENSIONS and not ffmpeg_available():
        return AudioError(
            f"cannot decode {path}: {suffix} files need ffmpeg, which is not installed; "
            f"install ffmpeg (e.g. `apt-get install ffmpeg`) or convert the file to FLAC or WAV"
        )
    hint = "convert it to FLAC or WAV" if ffmpeg_available() else "convert it to FLAC or WAV, or install ffmpeg"
    return AudioError(f"cannot decode {path} ({reason}); the file may be corrupt or in an unsupported format: {hint}")


# --------------------------------------------------------------------------------------------------- .npy arrays
def _open_npy(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` waveform, checking it is a 1-D or channel-first 2-D float array."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AudioError(f"cannot read {path} as a NumPy array ({exc}); re-create it with numpy.save") from None
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{path} holds a {arr.dtype} array; a .npy waveform must be float (16 kHz, -1..1)")
    if arr.ndim == 2 and arr.shape[0] < arr.shape[1]:
        return arr  # (C, T) channel-first
    if arr.ndim != 1:
        raise AudioError(f"{path} holds an array of shape {arr.shape}; a .npy waveform must be (T,) or (C, T)")
    return arr


def _read_npy(path: Path, offset: float | None, duration: float | None) -> tuple[np.ndarray, int]:
    """Read a ``.npy`` waveform as ``(T, C)`` float32 at :data:`NPY_SAMPLE_RATE`."""
    arr = _open_npy(path)
    total = arr.shape[-1]
    start = 0 if offset is None else round(offset * NPY_SAMPLE_RATE)
    if total and start >= total:
        raise AudioError(f"offset {offset} s is past the end of {path} ({total / NPY_SAMPLE_RATE:.2f} s)")
    stop = total if duration is None else min(total, start + max(1, round(duration * NPY_SAMPLE_RATE)))
    seg = np.asarray(arr[..., start:stop], dtype=np.float32)
    frames = seg.reshape(1, -1) if seg.ndim == 1 else seg
    return np.ascontiguousarray(frames.T), NPY_SAMPLE_RATE  # (T, C)


# --------------------------------------------------------------------------------------------------- ffmpeg
def _ffprobe(path: Path) -> AudioInfo:
    """Read the first audio stream's header with ``ffprobe``."""
    cmd = [
        "ffprobe", "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=sample_rate,channels,duration:format=duration,format_name",
        "-of", "json", str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise _unreadable(path, "ffprobe: " + proc.stderr.decode(errors="replace").strip()[:300])
    try:
        meta = json.loads(proc.stdout)
        stream = meta["streams"][0]
        fmt = meta.get("format", {})
        sr = int(stream["sample_rate"])
        channels = int(stream["channels"])
        duration = float(stream.get("duration") or fmt.get("duration"))
    except (KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError):
        raise _unreadable(path, "ffprobe found no audio stream") from None
    return AudioInfo(
        duration=duration,
        sample_rate=sr,
        channels=channels,
        format=str(fmt.get("format_name", path.suffix.lstrip(".").upper())),
        frames=round(duration * sr),
    )


def _read_ffmpeg(path: Path, offset: float | None, duration: float | None) -> tuple[np.ndarray, int]:
    """Decode with an ``ffmpeg`` subprocess to ``(T, C)`` float32 at the file's own rate."""
    info = _ffprobe(path)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    if offset:
        cmd += ["-ss", f"{offset:.6f}"]
    cmd += ["-i", str(path)]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-map", "0:a:0", "-ac", str(info.channels), "-ar", str(info.sample_rate)]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise _unreadable(path, "ffmpeg: " + proc.stderr.decode(errors="replace").strip()[:300])
    data = np.frombuffer(proc.stdout, dtype="<f4")
    usable = data.size - data.size % info.channels
    return data[:usable].reshape(-1, info.channels), info.sample_rate


# --------------------------------------------------------------------------------------------------- soundfile
def _read_soundfile(path: Path, offset: float | None, duration: float | None) -> tuple[np.ndarray, int]:
    """Decode with libsndfile to ``(T, C)`` float32, reading only the frames asked for."""
    with sf.SoundFile(os.fsencode(path)) as f:
        sr = int(f.samplerate)
        total = int(f.frames)
        start = 0 if offset is None else round(offset * sr)
        if total and start >= total:
            raise AudioError(f"offset {offset} s is past the end of {path} ({total / sr:.2f} s)")
        n = -1 if duration is None else max(1, round(duration * sr))
        if start:
            f.seek(start)
        return f.read(frames=n, dtype="float32", always_2d=True), sr


def _validate_request(path: Path, sample_rate: int, offset: float | None, duration: float | None) -> None:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r} for {path}")
    if offset is not None and not (np.isfinite(offset) and offset >= 0):
        raise AudioError(f"offset must be a non-negative number of seconds, got {offset!r} for {path}")
    if duration is not None and not (np.isfinite(duration) and duration > 0):
        raise AudioError(f"duration must be a positive number of seconds, got {duration!r} for {path}")


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a waveform with soxr (quality ``"HQ"``).

    Args:
        wave: ``(T,)`` or ``(T, C)`` float waveform at ``orig_rate`` Hz.
        orig_rate: its sample rate in Hz.
        target_rate: the wanted sample rate in Hz.

    Returns:
        ``(T',)`` or ``(T', C)`` float32 at ``target_rate``, ``T' ≈ T * target_rate / orig_rate``; the input
        itself (as float32) when the rates are equal.
    """
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if orig_rate == target_rate or wave.shape[0] == 0:
        return wave
    return np.asarray(soxr.resample(wave, orig_rate, target_rate, quality="HQ"), dtype=np.float32)


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    offset: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Decode an audio file (or a part of it) to a mono float32 waveform.

    Args:
        path: an audio file (see :data:`AUDIO_EXTENSIONS`), or a ``.npy`` float waveform stored at
            :data:`NPY_SAMPLE_RATE` (``(T,)``, or ``(C, T)`` channel-first).
        sample_rate: the rate of the returned waveform in Hz.
        offset: where to start reading, in seconds from the file start (``None``: the start).
        duration: how many seconds to read (``None``: to the end). Only these frames are decoded. Near the
            end of the file the result is shorter than ``duration``; pad it with
            :func:`musicsearch.audio.chunking.pad_to` if a fixed length is needed.

    Returns:
        ``(T,)`` float32 waveform at ``sample_rate`` Hz, channels averaged to mono, every sample finite.

    Raises:
        AudioError: if the file is missing, not a regular file, empty (0 bytes), corrupt or in a format that
            cannot be decoded, holds no samples, holds NaN/inf samples or samples beyond
            :data:`MAX_SAMPLE_MAGNITUDE` (a damaged float file), or ``offset`` is past its end. The message names
            the file and says what to do.
    """
    p = Path(path)
    _check_file(p)
    _validate_request(p, sample_rate, offset, duration)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        frames, sr = _read_npy(p, offset, duration)
    else:
        try:
            frames, sr = _read_soundfile(p, offset, duration)
        except (sf.SoundFileError, RuntimeError) as exc:
            if not ffmpeg_available():
                raise _unreadable(p, f"libsndfile: {exc}") from None
            logger.debug("libsndfile cannot read %s (%s); trying ffmpeg", p, exc)
            frames, sr = _read_ffmpeg(p, offset, duration)
    if frames.shape[0] == 0:
        raise AudioError(f"audio file {p} holds no samples; re-export it or remove it from the corpus")
    return resample(_checked_mono(p, frames), sr, int(sample_rate))


def _checked_mono(path: Path, frames: np.ndarray) -> np.ndarray:
    """``(T, C)`` frames -> ``(T,)`` float32 mono, refusing samples that no real recording holds.

    Raises:
        AudioError: NaN/inf samples, or samples beyond :data:`MAX_SAMPLE_MAGNITUDE` (garbage in a float file,
            which would make every model's output NaN).
    """
    finite = np.isfinite(frames)
    if not finite.all():
        n_bad = int(frames.size - np.count_nonzero(finite))
        raise AudioError(
            f"audio file {path} holds {n_bad} NaN/inf samples (a damaged float file); re-export it from the "
            "original, or remove it from the collection"
        )
    peak = float(np.abs(frames).max()) if frames.size else 0.0
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise AudioError(
            f"audio file {path} holds samples of magnitude {peak:.3g}, far outside -1..1 (a damaged float file); "
            "re-export it from the original, or remove it from the collection"
        )
    return frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]  # (T,)


# --------------------------------------------------------------------------------------------------- windows only
#: Extra source audio read on each side of a window so the resampler's filter sees the same neighbourhood as
#: when the whole file is resampled (its interior then matches to ~1e-7).
RESAMPLE_MARGIN_SECONDS = 0.05
#: Frames per block when a file must be read sequentially (no seeking): bounds memory whatever the length.
STREAM_BLOCK_FRAMES = 1 << 16


def segment_samples(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    offset: float | None = None,
    duration: float | None = None,
) -> int:
    """How many samples :func:`load_audio` would return for the same arguments, read from the header only.

    Args:
        path: an audio file (not ``.npy``).
        sample_rate: the rate of the waveform in Hz.
        offset: segment start in seconds (``None``: the file start).
        duration: segment length in seconds (``None``: to the end).

    Returns:
        ``round(F * sample_rate / rate)`` for the ``F`` frames of the segment at the file's own ``rate`` (the
        resampled length); exact for libsndfile formats, estimated from the stated duration for ffmpeg ones.

    Raises:
        AudioError: as :func:`audio_info`, or ``offset`` past the end.
    """
    p = Path(path)
    _validate_request(p, sample_rate, offset, duration)
    info = audio_info(p)
    s0, s1 = _segment_frames(p, info, offset, duration)
    return round((s1 - s0) * int(sample_rate) / info.sample_rate)


def _segment_frames(path: Path, info: AudioInfo, offset: float | None, duration: float | None) -> tuple[int, int]:
    sr, total = info.sample_rate, info.frames
    s0 = 0 if offset is None else round(offset * sr)
    if total and s0 >= total:
        raise AudioError(f"offset {offset} s is past the end of {path} ({total / sr:.2f} s)")
    s1 = total if duration is None else min(total, s0 + max(1, round(duration * sr)))
    return s0, s1


def load_audio_windows(
    path: str | os.PathLike[str],
    starts: np.ndarray,
    length: int,
    *,
    sample_rate: int = 16000,
    offset: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Windows of the waveform :func:`load_audio` returns, decoding only those parts of the file.

    Memory stays bounded whatever the file's length: a seekable file (libsndfile formats) is read window by window
    (each with :data:`RESAMPLE_MARGIN_SECONDS` of context on both sides, on the resampler's phase grid, so a
    window equals the same samples of the whole resampled file up to ~1e-7); anything else (an ffmpeg format, a
    stream libsndfile cannot seek) is decoded once from the start in blocks of :data:`STREAM_BLOCK_FRAMES`,
    keeping only the frames the windows need.

    Args:
        path: an audio file (not ``.npy``).
        starts: ``(n,)`` window starts in samples at ``sample_rate``, from the segment start, ascending.
        length: window length in samples.
        sample_rate: the rate of the windows in Hz.
        offset, duration: the segment of the file, in seconds, as for :func:`load_audio`.

    Returns:
        ``(n, length)`` float32 mono windows, zero-padded past the end of the segment.

    Raises:
        AudioError: as :func:`load_audio` (missing, not a regular file, corrupt, damaged float samples).
    """
    p = Path(path)
    _check_file(p)
    _validate_request(p, sample_rate, offset, duration)
    info = audio_info(p)
    sr, tr = info.sample_rate, int(sample_rate)
    s0, s1 = _segment_frames(p, info, offset, duration)
    g = math.gcd(sr, tr)
    step_src, step_out = sr // g, tr // g  # source frames and output samples of one resampler phase period
    margin = round(RESAMPLE_MARGIN_SECONDS * tr)
    plans = []  # per window: (source frames [a, b) in file frames, output offset of the window in that chunk)
    for start in np.asarray(starts, np.int64).tolist():
        k = max(0, (start - margin) // step_out)  # chunk starts k phase periods into the segment
        a = s0 + k * step_src
        b = min(s1, s0 + math.ceil((start + length + margin) * sr / tr) + 1)
        plans.append((a, max(a, b), start - k * step_out))
    chunks = _read_ranges(p, [(a, b) for a, b, _ in plans], info)
    out = np.zeros((len(plans), length), np.float32)
    for i, ((_, _, off), frames) in enumerate(zip(plans, chunks, strict=True)):
        if frames.shape[0] == 0:
            continue  # the segment ends before this window: all padding
        wave = resample(_checked_mono(p, frames), sr, tr)[off : off + length]
        out[i, : wave.shape[0]] = wave
    return out


def _read_ranges(path: Path, ranges: list[tuple[int, int]], info: AudioInfo) -> list[np.ndarray]:
    """``(b - a, C)`` float32 frames of each ``[a, b)`` (file frames; fewer at the end of the file)."""
    try:
        with sf.SoundFile(os.fsencode(path)) as f:
            if f.seekable():
                out = []
                for a, b in ranges:
                    f.seek(a)
                    out.append(f.read(frames=b - a, dtype="float32", always_2d=True))
                return out
            return _collect(ranges, _soundfile_blocks(f), info.channels)
    except (sf.SoundFileError, RuntimeError) as exc:
        if not ffmpeg_available():
            raise _unreadable(path, f"libsndfile: {exc}") from None
        logger.debug("libsndfile cannot read %s (%s); streaming it through ffmpeg", path, exc)
    chunks = _collect(ranges, _ffmpeg_blocks(path, info), info.channels)
    if ranges and not any(c.shape[0] for c in chunks):
        raise _unreadable(path, "ffmpeg decoded no audio")
    return chunks


def _soundfile_blocks(f: sf.SoundFile) -> Iterator[np.ndarray]:
    """Read an open file sequentially in ``(T, C)`` float32 blocks (works without seeking)."""
    while (block := f.read(frames=STREAM_BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
        yield block


def _collect(ranges: list[tuple[int, int]], blocks: Iterator[np.ndarray], channels: int) -> list[np.ndarray]:
    """Copy the frames of each range out of a stream of ``(T, C)`` blocks read from the file start."""
    out = [np.zeros((b - a, channels), np.float32) for a, b in ranges]
    got = [0] * len(ranges)
    pos, end = 0, max((b for _, b in ranges), default=0)
    for block in blocks:
        nxt = pos + block.shape[0]
        for i, (a, b) in enumerate(ranges):
            lo, hi = max(a, pos), min(b, nxt)
            if lo < hi:
                out[i][lo - a : hi - a] = block[lo - pos : hi - pos]
                got[i] = max(got[i], hi - a)
        pos = nxt
        if pos >= end:
            break
    return [o[:n] for o, n in zip(out, got, strict=True)]


def _ffmpeg_blocks(path: Path, info: AudioInfo) -> Iterator[np.ndarray]:
    """Decode with an ``ffmpeg`` subprocess, yielding ``(T, C)`` float32 blocks at the file's own rate."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    cmd += ["-map", "0:a:0", "-ac", str(info.channels), "-ar", str(info.sample_rate)]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    frame_bytes = 4 * info.channels
    try:
        rest = b""
        while data := proc.stdout.read(STREAM_BLOCK_FRAMES * frame_bytes):
            data = rest + data
            usable = len(data) - len(data) % frame_bytes
            rest = data[usable:]
            yield np.frombuffer(data[:usable], dtype="<f4").reshape(-1, info.channels)
    finally:
        proc.kill()
        proc.wait()


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read duration, rate, channels and format from a file's header without decoding it.

    Args:
        path: an audio file or a ``.npy`` waveform (as for :func:`load_audio`).

    Returns:
        The file's :class:`AudioInfo`.

    Raises:
        AudioError: if the file is missing, empty, or its header cannot be read.
    """
    p = Path(path)
    _check_file(p)
    if p.suffix.lower() == ".npy":
        arr = _open_npy(p)
        frames = int(arr.shape[-1])
        channels = 1 if arr.ndim == 1 else int(arr.shape[0])
        return AudioInfo(frames / NPY_SAMPLE_RATE, NPY_SAMPLE_RATE, channels, "NPY", frames)
    try:
        info = sf.info(os.fsencode(p))  # bytes: names that are not valid UTF-8 still open
    except (sf.SoundFileError, RuntimeError) as exc:
        if not ffmpeg_available():
            raise _unreadable(p, f"libsndfile: {exc}") from None
        return _ffprobe(p)
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"audio file {p} holds no samples; re-export it or remove it from the corpus")
    return AudioInfo(
        duration=info.frames / info.samplerate,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        format=str(info.format),
        frames=int(info.frames),
    )
