"""ONNX exports of a model's two towers, run with ONNX Runtime: export, load (checked), parity against torch.

An export is a folder::

    text.onnx        token ids (+ attention mask, token type ids) -> (N, joint_dim) raw text embeddings
    audio.onnx       (B, window_samples) float32 16 kHz waveform windows -> (B, joint_dim) raw audio embeddings
    tokenizer.json   the text tower's tokenizer (Hugging Face ``tokenizers`` format)
    export.json      what it came from: the weights file's SHA-256, the config name, the joint dimension, the
                     window length, the tokenizer settings, each file's size and SHA-256, the measured parity

Loading an export (:meth:`ExportedModel.open`) checks it against the weights it is meant to stand for: a stale
export (made from other weights), a missing or altered file raise :class:`StaleExportError`, never a wrong
embedding. Callers that can (the search path) fall back to torch with a warning.

This module imports neither torch nor transformers at import time: loading and running an export needs only
``onnxruntime``, ``tokenizers`` and numpy. Exporting imports torch.

Exports of the shipped models are not shipped in the package (the default's MiniLM text tower alone is about
90 MB as float32 ONNX): they are written on first use into :func:`onnx_cache_dir`, one folder per weights
checksum, atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from musicsearch.errors import CheckpointError, ConfigError
from musicsearch.fileio import atomic_dir, sha256_file, write_json

if TYPE_CHECKING:
    from musicsearch.models.dual_encoder import TextToMusic

log = logging.getLogger(__name__)

__all__ = [
    "AUDIO_FILE",
    "EXPORT_FILE",
    "TEXT_FILE",
    "TOKENIZER_FILE",
    "ExportedModel",
    "StaleExportError",
    "check_export",
    "export_dir_for",
    "export_onnx",
    "onnx_cache_dir",
    "parity_inputs",
    "weights_of",
]

TEXT_FILE = "text.onnx"
AUDIO_FILE = "audio.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FILE = "export.json"
#: Bumped when the layout or the graphs' inputs change; an export of another version is stale.
FORMAT_VERSION = 1
#: The ONNX operator set the graphs are written with.
OPSET = 17
#: Largest absolute difference to torch an export may show on :func:`parity_inputs` (float32 arithmetic).
PARITY_TOLERANCE = 1e-4
#: Texts of the parity check: short and long, tags and sentences, one longer than any ``max_length`` we use.
PARITY_TEXTS: tuple[str, ...] = (
    "calm piano",
    "rock",
    "an energetic electronic track with a driving beat and bright synth leads, good for running",
    "sad, slow, female vocals",
    " ".join(["ambient drone with field recordings"] * 30),
)
#: Models shipped with the package: ``models.json`` beside their weights (read here without torch).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
ENV_CACHE = "MUSICSEARCH_CACHE"
_HF_TO_TOKENIZERS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class StaleExportError(CheckpointError):
    """An ONNX export that does not stand for the weights asked for (stale), or whose files are damaged."""


def onnx_cache_dir() -> Path:
    """``$MUSICSEARCH_CACHE/onnx``, default ``~/.cache/musicsearch/onnx``: where exports made on first use live."""
    root = os.environ.get(ENV_CACHE) or "~/.cache/musicsearch"
    return Path(root).expanduser() / "onnx"


def export_dir_for(weights_sha256: str, *, int8: bool = False, root: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of the export of the weights with SHA-256 ``weights_sha256`` (``-int8`` for int8)."""
    base = Path(root).expanduser() if root is not None else onnx_cache_dir()
    return base / (weights_sha256[:24] + ("-int8" if int8 else ""))


def weights_of(model: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """The weights file a ``--model`` value names and its SHA-256, found without torch.

    Args:
        model: a shipped model's name (``default``), a ``.safetensors`` file or a training run folder.

    Returns:
        ``(path, sha256)``, or ``None`` for what only torch can resolve (a published ``ttmr/...`` checkpoint) or
        what does not exist (the torch path then reports it). A shipped model's checksum is the one
        ``models.json`` records (loading it with torch checks the file against it).
    """
    p = Path(model).expanduser()
    if not p.exists():
        index = SHIPPED_DIR / "models.json"
        try:
            entry = json.loads(index.read_text(encoding="utf-8")).get("models", {}).get(str(model))
        except (OSError, ValueError):
            return None
        if not entry or not (SHIPPED_DIR / entry["file"]).is_file():
            return None
        return SHIPPED_DIR / entry["file"], str(entry["sha256"])
    ckpt = p / "best.safetensors" if p.is_dir() else p
    if not ckpt.is_file():
        return None
    return ckpt.resolve(), sha256_file(ckpt)


# --- export (torch) -------------------------------------------------------------------------------------------


def _graphs(model: TextToMusic) -> tuple[Any, Any]:
    """``(text graph or None, audio graph)``: plain ``nn.Module``s with tensor inputs, as ONNX export needs."""
    import torch
    from torch import nn

    from musicsearch.text.encoders import TransformerTextEncoder

    class AudioGraph(nn.Module):
        def __init__(self, m: TextToMusic) -> None:
            super().__init__()
            self.m = m

        def forward(self, wave: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, D)
            return self.m.encode_audio(wave)

    class TextGraph(nn.Module):
        def __init__(self, enc: TransformerTextEncoder, proj: nn.Module, names: Sequence[str]) -> None:
            super().__init__()
            self.hf, self.proj, self.pooling, self.names = enc.model, proj, enc.pooling, list(names)

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # each (N, L) int64 -> (N, D)
            batch = dict(zip(self.names, inputs))
            hidden = self.hf(**batch).last_hidden_state  # (N, L, H)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.proj(pooled)  # (N, D)

    text = None
    enc = model.text_encoder
    if isinstance(enc, TransformerTextEncoder) and model.text_projector is not None:
        names = [n for n in _HF_TO_TOKENIZERS if n in enc.tokenize(["x"], device=torch.device("cpu"))]
        text = TextGraph(enc, model.text_projector, names).eval()
    return text, AudioGraph(model).eval()


class _RealSTFT(NamedTuple):
    """What the front ends read of ``torch.stft``'s complex result: its real and imaginary parts."""

    real: Any
    imag: Any


@contextlib.contextmanager
def _exportable_stft() -> Iterator[None]:
    """Replace ``torch.stft`` while exporting by a real-valued DFT (framing + two matmuls), which the ONNX
    exporter can write (it refuses complex tensors). Same arguments; returns ``(real, imag)`` parts of shape
    ``(B, n_fft // 2 + 1, frames)`` (or without ``B`` for a 1-d input). The parity check compares the export
    with the real ``torch.stft``."""
    import torch
    import torch.nn.functional as F

    original = torch.stft

    def stft(
        input: torch.Tensor,
        n_fft: int,
        hop_length: int | None = None,
        win_length: int | None = None,
        window: torch.Tensor | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        normalized: bool = False,
        onesided: bool | None = None,
        return_complex: bool | None = None,
    ) -> _RealSTFT:
        if normalized or onesided is False or (win_length not in (None, n_fft)):
            raise CheckpointError("this model's STFT settings cannot be exported to ONNX (normalized/two-sided/win)")
        hop = hop_length or n_fft // 4
        x = input[None] if input.dim() == 1 else input  # (B, T)
        if center:
            x = F.pad(x[:, None], (n_fft // 2, n_fft // 2), mode=pad_mode)[:, 0]
        n = np.arange(n_fft)[None, :] * np.arange(n_fft // 2 + 1)[:, None]  # (F, n_fft)
        angle = 2.0 * np.pi * (n % n_fft) / n_fft
        w = window.to(x.dtype) if window is not None else torch.ones(n_fft, dtype=x.dtype)
        cos = torch.from_numpy(np.cos(angle).astype(np.float32)) * w  # (F, n_fft): window folded in
        sin = torch.from_numpy(-np.sin(angle).astype(np.float32)) * w
        real = F.conv1d(x[:, None], cos[:, None], stride=hop)  # (B, F, N): one output per frame
        imag = F.conv1d(x[:, None], sin[:, None], stride=hop)
        if input.dim() == 1:
            real, imag = real[0], imag[0]
        return _RealSTFT(real, imag)

    torch.stft = stft  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.stft = original


def _sha(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def export_onnx(
    model: TextToMusic,
    out_dir: str | os.PathLike[str],
    *,
    weights_sha256: str,
    source: str = "",
    int8: bool = False,
    check: bool = True,
) -> Path:
    """Export both towers of ``model`` to ONNX in ``out_dir`` (written atomically: a temporary folder renamed).

    Any model works whose audio tower takes ``(B, window_samples)`` waveforms (the paper's transformer tower,
    the musicnn towers); the text tower is exported for transformer text encoders, and a model without one (a
    GloVe or classification model) gets an audio-only export whose text falls back to torch.

    Args:
        model: the model (eval mode is set here; it is not modified otherwise).
        out_dir: the export folder (replaced if it exists).
        weights_sha256: SHA-256 of the weights file ``model`` was loaded from; the export stands for those.
        source: the ``--model`` value it came from (recorded).
        int8: also quantise both graphs' weights to int8 (ONNX Runtime dynamic quantisation; not the default:
            see docs/results.md for its cost).
        check: compare the export with torch on :func:`parity_inputs` and refuse it (float32) above
            :data:`PARITY_TOLERANCE`.

    Returns:
        The export folder.

    Raises:
        CheckpointError: torch and the export disagree, or the model cannot be exported.
    """
    import torch

    model = model.eval()
    out = Path(out_dir).expanduser()
    with atomic_dir(out) as tmp:
        text_graph, audio_graph = _graphs(model)
        cfg = model.config
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "opset": OPSET,
            "weights_sha256": weights_sha256,
            "source": source,
            "config_name": cfg.name,
            "joint_dim": int(cfg.joint_dim),
            "window_samples": int(cfg.audio.window_samples),
            "int8": bool(int8),
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "text": None,
            "files": {},
        }
        t0 = time.perf_counter()
        wave = torch.from_numpy(parity_inputs(cfg.audio.window_samples)[1][:2])  # (2, T)
        with torch.no_grad(), _exportable_stft(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: the parity check below is what tells
            torch.onnx.export(
                audio_graph,
                (wave,),
                str(tmp / AUDIO_FILE),
                input_names=["wave"],
                output_names=["embedding"],
                dynamic_axes={"wave": {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
            if text_graph is not None:
                enc: Any = model.text_encoder  # a TransformerTextEncoder (the text graph exists)
                batch = enc.tokenize(list(PARITY_TEXTS[:2]), device=torch.device("cpu"))
                inputs = tuple(batch[n] for n in text_graph.names)
                torch.onnx.export(
                    text_graph,
                    inputs,
                    str(tmp / TEXT_FILE),
                    input_names=text_graph.names,
                    output_names=["embedding"],
                    dynamic_axes={
                        **{n: {0: "batch", 1: "tokens"} for n in text_graph.names},
                        "embedding": {0: "batch"},
                    },
                    opset_version=OPSET,
                    dynamo=False,
                )
                tok = enc.tokenizer
                backend = getattr(tok, "backend_tokenizer", None)
                if backend is None:
                    raise CheckpointError(
                        f"model {cfg.name}: its tokenizer has no fast (tokenizers) version, so the text tower "
                        "cannot run without transformers; give it a fast tokenizer"
                    )
                backend.save(str(tmp / TOKENIZER_FILE))
                meta["text"] = {
                    "inputs": text_graph.names,
                    "max_length": int(enc.max_length),
                    "pad_id": int(tok.pad_token_id or 0),
                    "pad_token": str(tok.pad_token or "[PAD]"),
                }
        log.info("exported %s to ONNX in %.1f s", cfg.name, time.perf_counter() - t0)
        if int8:
            _quantize(tmp)
        for name in (TEXT_FILE, AUDIO_FILE, TOKENIZER_FILE):
            if (tmp / name).is_file():
                meta["files"][name] = _sha(tmp / name)
        write_json(tmp / EXPORT_FILE, meta)
        if check:
            diff = check_export(model, tmp, weights_sha256=weights_sha256)
            meta["parity_max_abs_diff"] = diff
            if not int8 and max(v for v in diff.values() if v is not None) > PARITY_TOLERANCE:
                if os.environ.get("MUSICSEARCH_ONNX_DEBUG"):
                    shutil.copytree(tmp, str(out) + ".rejected", dirs_exist_ok=True)
                raise CheckpointError(
                    f"ONNX export of {cfg.name} differs from torch by {diff} (more than {PARITY_TOLERANCE}); "
                    "not written. Report this with the model and the torch/onnxruntime versions"
                )
            write_json(tmp / EXPORT_FILE, meta)
    return out


def _quantize(folder: Path) -> None:
    """Replace each graph in ``folder`` by its int8 dynamic quantisation (weights int8, activations float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in (TEXT_FILE, AUDIO_FILE):
        src = folder / name
        if not src.is_file():
            continue
        dst = folder / (name + ".int8")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        os.replace(dst, src)


def parity_inputs(window_samples: int) -> tuple[list[str], np.ndarray]:
    """The fixed inputs exports are checked on: :data:`PARITY_TEXTS` and 3 seeded ``(3, window_samples)``
    float32 windows (noise, a 440 Hz tone with harmonics over noise 30 dB down, silence), within [-1, 1].

    A pure sine is left out on purpose: most mel bands then hold only float32 rounding of the STFT's
    side lobes, whose dB values differ between any two float32 STFTs (FFT vs DFT) by up to ~1e-4 in the
    embedding; music never looks like that."""
    rng = np.random.default_rng(0)
    t = np.arange(window_samples, dtype=np.float64) / 16000.0
    windows = np.stack(
        [
            np.clip(0.3 * rng.standard_normal(window_samples), -1.0, 1.0),
            sum(0.4 / h * np.sin(2 * np.pi * 440.0 * h * t) for h in (1, 2, 3))
            + 0.01 * rng.standard_normal(window_samples),
            np.zeros(window_samples),
        ]
    ).astype(np.float32)
    return list(PARITY_TEXTS), windows


def check_export(model: TextToMusic, folder: str | os.PathLike[str], *, weights_sha256: str) -> dict[str, float | None]:
    """Largest absolute difference between torch and the export on :func:`parity_inputs`.

    Returns:
        ``{"text": float or None (no text graph), "audio": float}``, raw (not normalised) embeddings.
    """
    import torch

    from musicsearch.models.inference import embed_texts

    exported = ExportedModel.open(folder, weights_sha256=weights_sha256)
    texts, windows = parity_inputs(model.config.audio.window_samples)
    with torch.no_grad():
        ref_audio = model.eval().encode_audio(torch.from_numpy(windows)).numpy()
    out: dict[str, float | None] = {"audio": float(np.abs(exported.encode_audio(windows) - ref_audio).max())}
    out["text"] = None
    if exported.has_text:
        ref_text = embed_texts(model, texts)
        out["text"] = float(np.abs(exported.encode_text(texts) - ref_text).max())
    return out


# --- runtime (no torch) ---------------------------------------------------------------------------------------


@dataclass
class ExportedModel:
    """A checked export, ready to run with ONNX Runtime (no torch, no transformers).

    Attributes:
        folder: the export folder.
        meta: its ``export.json``.
    """

    folder: Path
    meta: dict[str, Any]
    threads: int = 0
    _text: Any = None
    _audio: Any = None
    _tokenizer: Any = None

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        *,
        weights_sha256: str,
        threads: int = 0,
        verify_files: bool = True,
    ) -> ExportedModel:
        """Open an export after checking it stands for the weights with SHA-256 ``weights_sha256``.

        Args:
            folder: the export folder.
            weights_sha256: the checksum of the weights the caller would otherwise load with torch.
            threads: ONNX Runtime intra-op threads (0: its default, one per core).
            verify_files: check each file's size and SHA-256 against ``export.json`` (about 0.1 s for 90 MB).

        Raises:
            StaleExportError: no export there, another format version, made from other weights, or a file
                missing, altered or unreadable. The message names the folder and says how to rebuild it.
        """
        path = Path(folder).expanduser()
        redo = f"rebuild it: musicsearch export --onnx --model MODEL --out {path}"
        try:
            meta = json.loads((path / EXPORT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StaleExportError(f"no ONNX export in {path} ({EXPORT_FILE} missing); {redo}") from None
        except (OSError, ValueError) as exc:
            raise StaleExportError(f"ONNX export {path}: {EXPORT_FILE} is unreadable ({exc}); {redo}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise StaleExportError(
                f"ONNX export {path} has format {meta.get('format')!r}, not {FORMAT_VERSION}; {redo}"
            )
        if meta.get("weights_sha256") != weights_sha256:
            raise StaleExportError(
                f"ONNX export {path} was made from weights {str(meta.get('weights_sha256'))[:12]}, not "
                f"{weights_sha256[:12]} (the model changed since); {redo}"
            )
        files = meta.get("files", {})
        wanted = [AUDIO_FILE] + ([TEXT_FILE, TOKENIZER_FILE] if meta.get("text") else [])
        for name in wanted:
            f = path / name
            rec = files.get(name)
            try:
                ok = rec is not None and f.stat().st_size == rec["bytes"]
                ok = ok and (not verify_files or sha256_file(f) == rec["sha256"])
            except OSError as exc:
                raise StaleExportError(f"ONNX export {path}: {name} cannot be read ({exc}); {redo}") from None
            if not ok:
                raise StaleExportError(
                    f"ONNX export {path}: {name} does not match its checksum in {EXPORT_FILE}; {redo}"
                )
        return cls(path, meta, threads=threads)

    @property
    def has_text(self) -> bool:
        """Whether the export holds the text tower."""
        return bool(self.meta.get("text"))

    @property
    def dim(self) -> int:
        """Joint embedding dimension."""
        return int(self.meta["joint_dim"])

    @property
    def window_samples(self) -> int:
        """Audio tower input length (samples at 16 kHz)."""
        return int(self.meta["window_samples"])

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file the export came from."""
        return str(self.meta["weights_sha256"])

    def _session(self, name: str, threads: int | None = None, *, spinning: bool = True) -> Any:
        import onnxruntime as ort

        threads = self.threads if threads is None else threads
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.folder / name), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged graph
            raise StaleExportError(
                f"ONNX export {self.folder}: {name} cannot be loaded ({exc.__class__.__name__}); rebuild it: "
                f"musicsearch export --onnx --model MODEL --out {self.folder}"
            ) from None

    def audio_session(self, *, threads: int, spinning: bool = True) -> Any:
        """A new ONNX Runtime session of the audio graph with ``threads`` intra-op threads, sequential execution
        (for callers that set their own thread count, such as the indexer; input ``wave``, output ``embedding``).
        ``spinning=False`` makes idle pool threads sleep at once instead of busy-waiting for the next operator
        (right when other processes want the cores).

        Raises:
            StaleExportError: the graph cannot be loaded.
        """
        return self._session(AUDIO_FILE, threads, spinning=spinning)

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``N`` texts -> the text graph's inputs, each ``(N, L)`` int64 (padded to the longest, truncated)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            spec: Mapping[str, Any] = self.meta["text"]
            tok = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
            tok.enable_truncation(max_length=int(spec["max_length"]))
            tok.enable_padding(pad_id=int(spec["pad_id"]), pad_token=str(spec["pad_token"]))
            self._tokenizer = tok
        encs = self._tokenizer.encode_batch(list(texts))
        return {
            n: np.asarray([getattr(e, _HF_TO_TOKENIZERS[n]) for e in encs], dtype=np.int64)
            for n in self.meta["text"]["inputs"]
        }

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> ``(N, joint_dim)`` float32 raw (not normalised) embeddings.

        Raises:
            ConfigError: the export has no text tower.
        """
        if not self.has_text:
            raise ConfigError(
                f"ONNX export {self.folder} has no text tower (its model has no transformer text encoder)"
            )
        if self._text is None:
            self._text = self._session(TEXT_FILE)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self._text.run(None, self.tokenize(texts))[0]
        return np.asarray(out, dtype=np.float32)

    def encode_audio(self, windows: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
        """``(B, window_samples)`` float32 16 kHz windows -> ``(B, joint_dim)`` float32 raw embeddings."""
        if self._audio is None:
            self._audio = self._session(AUDIO_FILE)
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window_samples:
            raise ConfigError(f"windows must be (N, {self.window_samples}), got {x.shape}")
        parts = [self._audio.run(None, {"wave": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.dim), np.float32)
