"""Render MIDI to audio in-process with libfluidsynth (a small ctypes binding) and a General MIDI soundfont.

Each render uses a fresh synthesizer with dynamic sample loading (only the samples a clip uses are read), so the
audio of a clip does not depend on what was rendered before; the synth's own reverb and chorus are off and
:func:`master` adds a deterministic room instead. Rendering happens at :data:`RENDER_RATE` and is resampled to
16 kHz with soxr, which removes the aliasing that the synth's sample interpolation would fold below 8 kHz at a
16 kHz render rate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import soxr

from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.fileio import atomic_write

SAMPLE_RATE = 16000
"""Sample rate of the corpus audio, Hz."""

RENDER_RATE = 32000
"""Sample rate FluidSynth renders at before resampling to :data:`SAMPLE_RATE`, Hz."""

SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/local/share/soundfonts")
SOUNDFONT_NAMES = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2")

TARGET_RMS_DB = {"soft": -26.0, "medium": -21.0, "loud": -17.0}
"""Loudness (RMS, dBFS) a clip is normalised to, by its dynamic level, so soft clips stay quieter than loud ones."""

PEAK_CEILING = 10 ** (-1.0 / 20)
"""Highest allowed sample magnitude after normalisation (-1 dBFS)."""


def find_soundfont(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate a General MIDI soundfont.

    Args:
        path: an explicit ``.sf2`` file; if ``None``, ``$MUSICSEARCH_SOUNDFONT`` and then the usual Debian folders
            (``/usr/share/sounds/sf2``: FluidR3_GM.sf2, default-GM.sf2, TimGM6mb.sf2) are tried.

    Returns:
        The soundfont path.

    Raises:
        MusicSearchError: if the given file does not exist or no soundfont is installed.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MusicSearchError(f"soundfont {p} does not exist; pass an existing .sf2 file to --soundfont")
        return p
    env = os.environ.get("MUSICSEARCH_SOUNDFONT")
    if env:
        return find_soundfont(env)
    for d in SOUNDFONT_DIRS:
        for name in SOUNDFONT_NAMES:
            p = Path(d) / name
            if p.is_file():
                return p.resolve()
    raise MusicSearchError(
        "no General MIDI soundfont found in /usr/share/sounds/sf2; install one with "
        "`apt-get install fluid-soundfont-gm` (or `make demo` installs it), or pass --soundfont PATH"
    )


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth") or "libfluidsynth.so.3"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise MusicSearchError(
            "libfluidsynth is not installed; install it with `apt-get install libfluidsynth3` (or `fluidsynth`)"
        ) from None
    vp, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "new_fluid_settings": (vp, []),
        "delete_fluid_settings": (None, [vp]),
        "fluid_settings_setnum": (c_int, [vp, c_char_p, ctypes.c_double]),
        "fluid_settings_setint": (c_int, [vp, c_char_p, c_int]),
        "new_fluid_synth": (vp, [vp]),
        "delete_fluid_synth": (None, [vp]),
        "fluid_synth_sfload": (c_int, [vp, c_char_p, c_int]),
        "fluid_synth_noteon": (c_int, [vp, c_int, c_int, c_int]),
        "fluid_synth_noteoff": (c_int, [vp, c_int, c_int]),
        "fluid_synth_cc": (c_int, [vp, c_int, c_int, c_int]),
        "fluid_synth_program_change": (c_int, [vp, c_int, c_int]),
        "fluid_synth_pitch_bend": (c_int, [vp, c_int, c_int]),
        "fluid_synth_write_float": (c_int, [vp, c_int, vp, c_int, c_int, vp, c_int, c_int]),
        "fluid_set_log_function": (vp, [c_int, vp, vp]),
    }
    for fname, (restype, argtypes) in signatures.items():
        fn = getattr(lib, fname)
        fn.restype = restype
        fn.argtypes = argtypes
    for level in range(5):  # silence FluidSynth's own logging (it writes to stderr)
        lib.fluid_set_log_function(level, None, None)
    return lib


def midi_events(midi: mido.MidiFile) -> Iterator[tuple[float, mido.Message]]:
    """The channel messages of a MIDI file with their absolute times in seconds (tempo map applied)."""
    now = 0.0
    for msg in midi:
        now += msg.time
        if not msg.is_meta:
            yield now, msg


class FluidSynth:
    """In-process FluidSynth rendering MIDI files with one soundfont to float32 audio.

    Every :meth:`render` runs on a freshly created synthesizer, so a clip's audio is a pure function of its MIDI
    file: a synthesizer that has played other notes before does not reproduce the first render bit for bit
    (measured with libfluidsynth 2.3), while a fresh one costs only ~20 ms with dynamic sample loading, which
    reads just the samples of the programs a clip selects.

    Args:
        soundfont: path of a ``.sf2`` file (see :func:`find_soundfont`).
        sample_rate: render rate in Hz.

    Raises:
        MusicSearchError: if libfluidsynth is missing or the soundfont cannot be loaded.
    """

    def __init__(self, soundfont: str | os.PathLike[str], *, sample_rate: int = RENDER_RATE) -> None:
        self.soundfont = Path(soundfont)
        self.sample_rate = int(sample_rate)
        self._lib = _load_library()
        lib = self._lib
        self._settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self._settings, b"synth.sample-rate", float(self.sample_rate))
        lib.fluid_settings_setnum(self._settings, b"synth.gain", 0.4)
        for key, value in (
            (b"synth.reverb.active", 0),
            (b"synth.chorus.active", 0),
            (b"synth.threadsafe-api", 0),
            (b"synth.cpu-cores", 1),
            (b"synth.polyphony", 256),
            (b"synth.dynamic-sample-loading", 1),
        ):
            lib.fluid_settings_setint(self._settings, key, value)
        self._new_synth()  # fail early on a bad soundfont

    def _new_synth(self) -> int:
        lib = self._lib
        if not self._settings:
            raise MusicSearchError("this FluidSynth was closed; make a new one")
        synth = lib.new_fluid_synth(self._settings)
        if not synth:
            raise MusicSearchError("FluidSynth could not create a synthesizer (libfluidsynth failed)")
        if lib.fluid_synth_sfload(synth, str(self.soundfont).encode(), 1) < 0:
            lib.delete_fluid_synth(synth)
            raise MusicSearchError(f"FluidSynth could not load soundfont {self.soundfont}; is it a valid .sf2 file?")
        return int(synth)

    def close(self) -> None:
        """Free the settings (the object cannot render afterwards)."""
        if getattr(self, "_settings", None):
            self._lib.delete_fluid_settings(self._settings)
            self._settings = None

    def __enter__(self) -> FluidSynth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def render(self, midi: mido.MidiFile, seconds: float, *, channels: Iterable[int] | None = None) -> np.ndarray:
        """Render the first ``seconds`` of a MIDI file.

        Args:
            midi: the MIDI file.
            seconds: length of the output in seconds.
            channels: render only the notes of these MIDI channels (programs and controllers of all channels are
                still applied); ``None`` renders everything.

        Returns:
            ``(2, N)`` float32 stereo audio at :attr:`sample_rate`, ``N = round(seconds * sample_rate)``.
        """
        lib = self._lib
        synth = self._new_synth()
        try:
            n = round(seconds * self.sample_rate)
            left = np.zeros(n, dtype=np.float32)
            right = np.zeros(n, dtype=np.float32)

            def write(start: int, stop: int) -> None:
                if stop > start:
                    lib.fluid_synth_write_float(
                        synth, stop - start, left.ctypes.data, start, 1, right.ctypes.data, start, 1
                    )

            keep = None if channels is None else set(channels)
            pos = 0
            for t, msg in midi_events(midi):
                at = min(n, round(t * self.sample_rate))
                if at > pos:
                    write(pos, at)
                    pos = at
                if pos >= n:
                    break
                kind = msg.type
                if kind in ("note_on", "note_off"):
                    if keep is not None and msg.channel not in keep:
                        continue
                    if kind == "note_on" and msg.velocity > 0:
                        lib.fluid_synth_noteon(synth, msg.channel, msg.note, msg.velocity)
                    else:
                        lib.fluid_synth_noteoff(synth, msg.channel, msg.note)
                elif kind == "program_change":
                    lib.fluid_synth_program_change(synth, msg.channel, msg.program)
                elif kind == "control_change":
                    lib.fluid_synth_cc(synth, msg.channel, msg.control, msg.value)
                elif kind == "pitchwheel":
                    lib.fluid_synth_pitch_bend(synth, msg.channel, msg.pitch + 8192)
            write(pos, n)
        finally:
            lib.delete_fluid_synth(synth)
        return np.stack([left, right])


def reverb_ir(rt60: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: exponentially decaying noise, darker as it decays, unit energy.

    The noise comes from a fixed seed derived from ``rt60``, so the same room always gives the same response.

    Args:
        rt60: reverberation time in seconds (time for a 60 dB decay).
        sample_rate: Hz.

    Returns:
        ``(L,)`` float64 impulse response, including a 12 ms pre-delay of zeros.
    """
    rng = np.random.default_rng(round(rt60 * 1000) + 7919)
    length = int(min(rt60 * 1.1, 3.5) * sample_rate)
    t = np.arange(length) / sample_rate
    bright = rng.standard_normal(length) * np.exp(-6.91 * t / (0.45 * rt60))
    dark = np.convolve(rng.standard_normal(length), np.ones(6) / 6, mode="same") * np.exp(-6.91 * t / rt60)
    ir = 0.35 * bright + dark
    ir *= np.minimum(1.0, t / 0.004 + 0.05)  # soften the onset
    ir = np.concatenate([np.zeros(int(0.012 * sample_rate)), ir])
    return ir / np.sqrt(np.sum(ir**2))


def master(
    stereo: np.ndarray,
    *,
    in_rate: int,
    out_rate: int = SAMPLE_RATE,
    reverb: float = 0.2,
    rt60: float = 1.2,
    dynamics: str = "medium",
) -> np.ndarray:
    """Turn the synth's stereo output into the corpus audio: mono, resampled, room added, loudness normalised.

    Args:
        stereo: ``(2, N)`` float32 audio at ``in_rate``.
        in_rate: its sample rate, Hz.
        out_rate: output sample rate, Hz.
        reverb: wet level of the room (0 = dry).
        rt60: room reverberation time, seconds.
        dynamics: ``soft`` / ``medium`` / ``loud``, choosing the RMS target of :data:`TARGET_RMS_DB`.

    Returns:
        ``(M,)`` float32 mono audio at ``out_rate``, ``M = round(N * out_rate / in_rate)``, peak <= -1 dBFS.

    Raises:
        AudioError: if the audio is silent.
    """
    mono = stereo.mean(axis=0).astype(np.float64)
    if in_rate != out_rate:
        mono = soxr.resample(mono, in_rate, out_rate, quality="HQ")
    n = len(mono)
    if reverb > 0:
        ir = reverb_ir(rt60, out_rate)
        size = 1 << int(np.ceil(np.log2(n + len(ir))))
        wet = np.fft.irfft(np.fft.rfft(mono, size) * np.fft.rfft(ir, size), size)[:n]
        mono = mono + reverb * wet
    fade = min(n, int(0.03 * out_rate))
    if fade:
        mono[n - fade :] *= np.linspace(1.0, 0.0, fade)
    rms = float(np.sqrt(np.mean(mono**2)))
    if not rms > 1e-7:
        raise AudioError("rendered clip is silent; check the soundfont and the MIDI programs")
    gain = 10 ** (TARGET_RMS_DB[dynamics] / 20) / rms
    peak = float(np.max(np.abs(mono)))
    gain = min(gain, PEAK_CEILING / peak)
    return (mono * gain).astype(np.float32)


def encode_flac(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of mono float audio in [-1, 1] (deterministic: same samples, same bytes)."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
