"""The paper's published checkpoints (Zenodo record 7322135, ``mtr.tar.gz``) by name, loaded exactly.

Ten variants (paper Table 2), named ``ttmr/<objective>-<text encoder>-<text representation>`` with the release's
words (``caption`` is our ``sentence``)::

    model = load_pretrained("ttmr/contrastive-bert-stochastic", weights="~/Downloads/mtr.tar.gz")

Where the weights come from (first that applies): ``weights`` (an ``mtr.tar.gz``, an unpacked folder, or one
``best.pth``), ``$MUSICSEARCH_TTMR_WEIGHTS``, an ``mtr/`` folder or ``mtr.tar.gz`` in the cache folder
(``$MUSICSEARCH_CACHE/published``, default ``~/.cache/musicsearch/published``), else a download from Zenodo into
the cache (progress bar, resumable ``.part`` file, SHA-256 recorded beside it on first download and checked on
later use). The text tower needs ``bert-base-uncased``'s config and tokenizer (its weights come from ``best.pth``)
or, for the GloVe variants, a 300-d GloVe text file; the classification head needs the 1,054 ECALS tags in the
release's order. What the release did at inference time (real-part power spectrogram, 9.91 s windows, window
placement and averaging) is in each entry's :meth:`PublishedModel.preprocessing` and in
:func:`release_track_embedding`.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from musicsearch import __version__
from musicsearch.audio.chunking import WINDOW_SAMPLES, pad_to
from musicsearch.data.sources.labels import asset_path
from musicsearch.errors import CheckpointError, ConfigError, MusicSearchError
from musicsearch.fileio import atomic_path, sha256_file, write_json
from musicsearch.models.checkpoint import load_model_file, load_state_strict, save_model
from musicsearch.models.config import ModelConfig
from musicsearch.models.convert import (
    convert_release_state,
    detect_release_kind,
    read_release_checkpoint,
    torch_load,
)
from musicsearch.models.dual_encoder import TextToMusic
from musicsearch.models.registry import model_config
from musicsearch.registry import Registry

log = logging.getLogger(__name__)

ZENODO_RECORD = "7322135"
ARCHIVE_NAME = "mtr.tar.gz"
ARCHIVE_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{ARCHIVE_NAME}?download=1"
#: The release's experiment folder: ``{arch}_{frontend}_{mix_type}_{audio_rep}``.
EXP_FOLDER = "exp/transformer_cnn_cf_mel"
BERT_NAME = "bert-base-uncased"
GLOVE_DIM = 300
N_ECALS_TAGS = 1054

ENV_CACHE = "MUSICSEARCH_CACHE"
ENV_WEIGHTS = "MUSICSEARCH_TTMR_WEIGHTS"
ENV_BERT = "MUSICSEARCH_BERT_BASE_UNCASED"
ENV_GLOVE = "MUSICSEARCH_GLOVE_300D"
ENV_ECALS_TAGS = "MUSICSEARCH_ECALS_TAGS"

# The ten published variants, as data: registry suffix, objective, the release's `framework`, `text_type` and
# `text_rep` (from each folder's hparams.yaml), and the folder under mtr/<objective>/exp/transformer_cnn_cf_mel/.
# The folder is f"{text_type}_{text_rep}" for contrastive/triplet, and f"{text_rep}_{text_type}" ("binary_tag")
# for classification, as the release's test scripts build it.
_VARIANTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # name suffix                 objective         framework      text_type  text_rep      folder
    ("classification-binary-tag", "classification", "tagging", "tag", "binary", "binary_tag"),
    ("triplet-glove-tag", "triplet", "triplet", "glove", "tag", "glove_tag"),
    ("triplet-glove-caption", "triplet", "triplet", "glove", "caption", "glove_caption"),
    ("triplet-glove-stochastic", "triplet", "triplet", "glove", "stochastic", "glove_stochastic"),
    ("triplet-bert-tag", "triplet", "triplet", "bert", "tag", "bert_tag"),
    ("triplet-bert-caption", "triplet", "triplet", "bert", "caption", "bert_caption"),
    ("triplet-bert-stochastic", "triplet", "triplet", "bert", "stochastic", "bert_stochastic"),
    ("contrastive-bert-tag", "contrastive", "contrastive", "bert", "tag", "bert_tag"),
    ("contrastive-bert-caption", "contrastive", "contrastive", "bert", "caption", "bert_caption"),
    ("contrastive-bert-stochastic", "contrastive", "contrastive", "bert", "stochastic", "bert_stochastic"),
)

#: hparams.yaml fields every published variant shares (the paper's audio tower and joint space).
RELEASE_HPARAMS: dict[str, Any] = {
    "arch": "transformer",
    "frontend": "cnn",
    "mix_type": "cf",
    "audio_rep": "mel",
    "duration": 9.91,
    "sr": 16000,
    "mel_dim": 128,
    "n_fft": 1024,
    "win_length": 1024,
    "attention_nlayers": 4,
    "attention_ndim": 256,
    "mlp_dim": 128,
}


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint: where it lies in the release and how to rebuild and run it exactly.

    Attributes:
        name: registry name, e.g. ``ttmr/contrastive-bert-stochastic``.
        objective: ``contrastive``, ``triplet`` or ``classification``.
        framework: the release's ``framework`` field (``tagging`` for classification).
        text_type: ``bert``, ``glove`` or (classification) ``tag``.
        release_rep: the release's text representation: ``tag``, ``caption``, ``stochastic`` (``binary``).
        folder: the variant's folder name under ``mtr/<objective>/exp/transformer_cnn_cf_mel/``.
        retrieval_windows: windows averaged per track in the release's ECALS retrieval test.
        transfer_windows: windows averaged per track in its transfer (zero-shot, probing) tests.
    """

    name: str
    objective: str
    framework: str
    text_type: str
    release_rep: str
    folder: str
    retrieval_windows: int = 3
    transfer_windows: int = 8

    @property
    def member(self) -> str:
        """Path of ``best.pth`` inside the archive."""
        return f"mtr/{self.objective}/{EXP_FOLDER}/{self.folder}/best.pth"

    @property
    def text_rep(self) -> str:
        """Our name of the text representation (``sentence`` for the release's ``caption``)."""
        return {"caption": "sentence", "binary": "tag"}.get(self.release_rep, self.release_rep)

    @property
    def window_pooling(self) -> str:
        """How the release pooled window embeddings into a track embedding.

        ``mean``: average of the (unnormalised) window embeddings. ``mean_of_normalised``: the classification
        model L2-normalises inside ``encode_audio``, so its track embedding is the average of unit vectors.
        """
        return "mean_of_normalised" if self.objective == "classification" else "mean"

    def preprocessing(self) -> dict[str, Any]:
        """The inference-time facts of the release for this model (stored in the model's metadata)."""
        return {
            "sample_rate": 16000,
            "window_samples": WINDOW_SAMPLES,
            "window_seconds": WINDOW_SAMPLES / 16000,
            "power_mode": "real_squared",
            "retrieval_windows": self.retrieval_windows,
            "transfer_windows": self.transfer_windows,
            "window_placement": "release: hop = (T - L) // n, starts i * hop for i < n",
            "window_pooling": self.window_pooling,
            "normalise": "L2 after pooling (cosine similarity)",
            "eval_mode": True,
            "text": {
                "bert": "one string per call, no truncation below BERT's 512 tokens, [CLS] of the last layer",
                "glove": "mean of per-tag 300-d vectors (the release's glove_tag_embs.pt); see encode_tags_release",
                "tag": "classifier rows (head.fc_cls) in ecals_tags.json order",
            }[self.text_type],
        }

    def config(self, *, text_encoder: str | None = None, tags: Sequence[str] = ()) -> ModelConfig:
        """Our :class:`ModelConfig` matching the release exactly.

        Args:
            text_encoder: BERT variants: hub id or local folder of ``bert-base-uncased`` (default the hub id);
                GloVe variants: path of a 300-d GloVe text file (required); ignored for classification.
            tags: classification: the 1,054 ECALS tags in head-row order.

        Raises:
            ConfigError: for a GloVe variant without a vectors file.
        """
        if self.text_type == "glove" and not text_encoder:
            raise ConfigError(f"{self.name} needs a 300-d GloVe text file as its text encoder")
        base = model_config(
            "paper",
            objective=self.objective,
            text_encoder="glove" if self.text_type == "glove" else None,
            text_rep=self.text_rep,
            tags=tags,
        )
        mel = dataclasses.replace(base.audio.mel, power_mode="real_squared")
        cfg = base.replace(name=self.name, audio={"mel": mel})
        if self.text_type == "bert":
            # eval in the release: tokenizer(text) without truncation, so allow BERT's full 512 positions
            cfg = cfg.replace(
                text={
                    "kind": "transformer",
                    "name": text_encoder or BERT_NAME,
                    "pooling": "cls",
                    "max_length": 512,
                    "trainable": True,
                    "random_init": False,
                    "overrides": (),
                }
            )
        elif self.text_type == "glove":
            cfg = cfg.replace(text={"kind": "word_vectors", "name": str(text_encoder)})
        return cfg


PUBLISHED: Registry[PublishedModel] = Registry("published model")
for _suffix, _objective, _framework, _text, _rep, _folder in _VARIANTS:
    PUBLISHED.add(f"ttmr/{_suffix}", PublishedModel(f"ttmr/{_suffix}", _objective, _framework, _text, _rep, _folder))


def is_published(name: str) -> bool:
    """Whether ``name`` names a published checkpoint (``ttmr/...``), known or not."""
    return str(name).startswith("ttmr/")


def published_model(name: str) -> PublishedModel:
    """The registry entry for ``name`` (``sentence`` is accepted for the release's ``caption``).

    Raises:
        ConfigError: naming the unknown name and listing the known ones.
    """
    key = str(name).strip()
    if key.endswith("-sentence"):
        key = key[: -len("sentence")] + "caption"
    return PUBLISHED.get(key)


# --- text tower and tag sources -------------------------------------------------------------------------------


def _glove_dim(path: Path) -> int:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip().split(" ")
            if len(parts) >= 2:
                return len(parts) - 1
    raise ConfigError(f"GloVe file {path} holds no vectors")


def resolve_text_encoder(variant: PublishedModel, text_encoder_path: str | None) -> str | None:
    """The text-tower source for ``variant``: the argument, else its environment variable, else the default.

    Returns:
        BERT: a folder or ``bert-base-uncased``; GloVe: the vectors file; classification: None.

    Raises:
        ConfigError: for a GloVe variant without a 300-d vectors file.
    """
    if variant.text_type == "bert":
        return text_encoder_path or os.environ.get(ENV_BERT) or BERT_NAME
    if variant.text_type != "glove":
        return None
    path = text_encoder_path or os.environ.get(ENV_GLOVE)
    if not path:
        raise ConfigError(
            f"{variant.name} needs the 300-d GloVe vectors the release used: pass text_encoder_path= (CLI "
            f"--text-encoder-path) or set ${ENV_GLOVE} to a GloVe text file such as glove.6B.300d.txt or "
            f"glove.840B.300d.txt (https://nlp.stanford.edu/projects/glove/). The offline 50-d vectors cannot "
            f"stand in: the published text projector is [128, 300]"
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"GloVe file {p} does not exist; give the path of a 300-d GloVe text file")
    dim = _glove_dim(p)
    if dim != GLOVE_DIM:
        raise ConfigError(
            f"{p} holds {dim}-d vectors, but {variant.name} was trained on {GLOVE_DIM}-d GloVe (projector "
            f"[128, {GLOVE_DIM}]); give a 300-d GloVe text file"
        )
    return str(p)


def resolve_ecals_tags(ecals_tags: str | os.PathLike[str] | None = None) -> tuple[tuple[str, ...], str]:
    """The 1,054 ECALS tags in the classification head's row order, and where they came from.

    The release's head rows follow its own ``ecals_annotation/ecals_tags.json``. Given that file (or the ECALS
    folder holding it; or ``$MUSICSEARCH_ECALS_TAGS``) it is used. Otherwise the list copied from the release's
    result files (``musicsearch/eval/assets/ecals/ecals_tags_1054.json``) is used with a warning: the release's
    test scripts wrote those files in ``ecals_tags.json`` order, so the order is expected to match, but that has
    not been checked against the real file.

    Raises:
        ConfigError: if a given file is missing or not a JSON list of strings.
    """
    given = ecals_tags or os.environ.get(ENV_ECALS_TAGS)
    if given:
        p = Path(given).expanduser()
        if p.is_dir():
            for cand in (p / "ecals_annotation" / "ecals_tags.json", p / "ecals_tags.json"):
                if cand.is_file():
                    p = cand
                    break
        if not p.is_file():
            raise ConfigError(f"ECALS tag list {p} does not exist; give ecals_annotation/ecals_tags.json")
        try:
            tags = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{p} is not a readable JSON file ({exc})") from None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{p} must hold a JSON list of tag strings")
        return tuple(tags), str(p)
    p = asset_path("ecals", "ecals_tags_1054.json")
    log.warning(
        "classification head: tag order taken from the release's result files (%s), not from its "
        "ecals_tags.json; expected to be the same order, but unconfirmed. Pass ecals_tags= (CLI --ecals-tags) "
        "or set $%s to be sure",
        p,
        ENV_ECALS_TAGS,
    )
    return tuple(json.loads(p.read_text(encoding="utf-8"))), f"fallback:{p.name}"


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


def check_hparams(path: str | os.PathLike[str], variant: PublishedModel) -> dict[str, Any]:
    """Check a release ``hparams.yaml`` against the variant and the paper's architecture.

    Returns:
        The parsed hparams.

    Raises:
        CheckpointError: naming each field that differs (``field: file value vs expected``).
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{p} is not a readable hparams.yaml ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} is not a mapping of hyper-parameters")
    expected = {
        **RELEASE_HPARAMS,
        "framework": variant.framework,
        "text_type": variant.text_type,
        "text_rep": variant.release_rep,
    }
    if variant.text_type == "bert":
        expected["text_backbone"] = BERT_NAME
    diffs = [f"{k}: {data[k]!r} vs {v!r}" for k, v in expected.items() if k in data and data[k] != v]
    if diffs:
        raise CheckpointError(
            f"{p} describes another model than {variant.name} (file vs expected): {'; '.join(diffs)}. "
            f"Check which best.pth you passed"
        )
    return data


# --- loading -----------------------------------------------------------------------------------------------------


def _build(variant: PublishedModel, cfg: ModelConfig) -> TextToMusic:
    try:
        return TextToMusic(cfg, pretrained_text=False)
    except ConfigError as exc:
        if variant.text_type != "bert":
            raise
        raise ConfigError(
            f"{variant.name} needs {BERT_NAME}'s config and tokenizer (its weights come from best.pth), which "
            f"could not be loaded from {cfg.text.name!r}. Connect to the network once (it is then in the Hugging "
            f"Face cache), or pass text_encoder_path= (CLI --text-encoder-path; or set ${ENV_BERT}) a local "
            f"folder holding bert-base-uncased's config.json and tokenizer files. ({exc})"
        ) from None


def load_pretrained(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    text_encoder_path: str | None = None,
    device: str | torch.device = "cpu",
    ecals_tags: str | os.PathLike[str] | None = None,
    allow_pickle: bool = True,
    download_missing: bool = True,
    url: str = ARCHIVE_URL,
    progress: bool | None = None,
) -> TextToMusic:
    """Load a published checkpoint onto our modules, strictly, in eval mode.

    Args:
        name: a :data:`PUBLISHED` name, e.g. ``ttmr/contrastive-bert-stochastic``.
        weights: ``mtr.tar.gz``, unpacked folder, or ``best.pth`` (see :func:`locate_weights`).
        cache_dir: cache folder for downloads and extracted files.
        text_encoder_path: BERT variants: folder with ``bert-base-uncased``'s config + tokenizer (default: the
            hub id, from the network or the Hugging Face cache; or ``$MUSICSEARCH_BERT_BASE_UNCASED``).
            GloVe variants: a 300-d GloVe text file (required; or ``$MUSICSEARCH_GLOVE_300D``).
        device: where to put the model.
        ecals_tags: classification: the release's ``ecals_tags.json`` or the ECALS folder (see
            :func:`resolve_ecals_tags`).
        allow_pickle: permit the full unpickler if the safe one refuses the file (see
            :func:`musicsearch.models.convert.torch_load`).
        download_missing: download the archive when no local weights are found.
        url: download address.
        progress: download progress bar (True / False / None: when stderr is a terminal).

    Returns:
        The model in eval mode; ``model.checkpoint_meta`` holds the source, the conversion facts and the
        release's preprocessing.

    Raises:
        ConfigError: unknown name, or a missing text-tower source.
        CheckpointError: missing or unreadable weights, a file of another variant, or any missing, unexpected
            or mis-shaped key.
    """
    variant = published_model(name)
    text_source = resolve_text_encoder(variant, text_encoder_path)
    tags: tuple[str, ...] = ()
    tags_source = None
    if variant.objective == "classification":
        tags, tags_source = resolve_ecals_tags(ecals_tags)
    best, source = locate_weights(
        variant, weights, cache_dir=cache_dir, download_missing=download_missing, url=url, progress=progress
    )
    state, report = read_release_checkpoint(best, allow_pickle=allow_pickle)
    kind = detect_release_kind(state)
    if kind != (variant.objective, variant.text_type):
        raise CheckpointError(
            f"{best} holds a {kind[0]} model with a {kind[1]} text tower, not {variant.name} "
            f"({variant.objective}, {variant.text_type}); pass the best.pth of {variant.member}"
        )
    hparams_path = best.with_name("hparams.yaml")
    hparams = check_hparams(hparams_path, variant) if hparams_path.is_file() else None
    tensors, report = convert_release_state(state, report)
    cfg = variant.config(text_encoder=text_source, tags=tags)
    model = _build(variant, cfg)
    load_state_strict(model, tensors, source=str(best))
    source.update(best_pth=str(best), best_pth_sha256=sha256_file(best), hparams=hparams)
    meta: dict[str, Any] = {
        "published": variant.name,
        "source": source,
        "conversion": report.to_dict(),
        "preprocessing": variant.preprocessing(),
        "text_encoder": text_source,
        "tags_source": tags_source,
    }
    fb_diff = _fb_difference(tensors.get("audio_encoder.audio_representation.mel_scale.fb"), cfg)
    meta["conversion"]["mel_fb_max_abs_diff_vs_ours"] = fb_diff
    model.checkpoint_meta = meta  # type: ignore[assignment]
    log.info("loaded %s from %s (epoch %s)", variant.name, best, report.epoch)
    return model.to(device).eval()


def _fb_difference(stored: torch.Tensor | None, cfg: ModelConfig) -> float | None:
    """How far the release's stored mel filterbank is from ours (a check of the front end; logged if large)."""
    from musicsearch.audio.features import htk_mel_filterbank

    if stored is None:
        return None
    m = cfg.audio.mel
    ours = htk_mel_filterbank(sample_rate=m.sample_rate, n_fft=m.n_fft, n_mels=m.n_mels, f_min=m.f_min, f_max=m.f_max)
    diff = float((stored.double() - torch.from_numpy(ours).double()).abs().max())
    if diff > 1e-4:
        log.warning("the checkpoint's mel filterbank differs from ours by up to %.3g (it is used as stored)", diff)
    return diff


# --- the release's inference-time preprocessing -------------------------------------------------------------------


def release_window_starts(n_samples: int, n_windows: int, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """Window starts as the release's evaluation placed them: ``hop = (T - L) // n``, starts ``i * hop``, ``i < n``.

    Unlike :func:`musicsearch.audio.chunking.evenly_spaced_starts`, the last window does not reach the end of the
    clip. The release fails on clips shorter than a window; here such a clip gives one start, 0 (padded).

    Returns:
        ``(n_windows,)`` int64 starts, or ``[0]`` for a clip no longer than ``length``.
    """
    if n_windows < 1:
        raise MusicSearchError(f"n_windows must be >= 1, got {n_windows}")
    if n_samples <= length:
        return np.zeros(1, dtype=np.int64)
    hop = (n_samples - length) // n_windows
    return np.arange(n_windows, dtype=np.int64) * hop


def release_windows(wave: np.ndarray, n_windows: int, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """``(T,)`` waveform at 16 kHz -> ``(k, length)`` float32 windows at :func:`release_window_starts`."""
    w = pad_to(np.asarray(wave), length)
    starts = release_window_starts(int(w.shape[0]), n_windows, length)
    return np.stack([w[s : s + length] for s in starts]).astype(np.float32, copy=False)


def _default_windows(model: TextToMusic, purpose: str) -> int:
    pre = (getattr(model, "checkpoint_meta", None) or {}).get("preprocessing") or {}
    key = {"retrieval": "retrieval_windows", "transfer": "transfer_windows"}.get(purpose)
    if key is None:
        raise MusicSearchError(f"purpose must be 'retrieval' or 'transfer', got {purpose!r}")
    return int(pre.get(key, 3 if purpose == "retrieval" else 8))


def release_track_embedding(
    model: TextToMusic, wave: np.ndarray, *, n_windows: int | None = None, purpose: str = "retrieval"
) -> torch.Tensor:
    """A track's embedding as the release computed it (before the final L2 normalisation).

    Windows at :func:`release_window_starts`; contrastive/triplet: mean of the window embeddings;
    classification: mean of the L2-normalised window embeddings (its ``encode_audio`` normalised).

    Args:
        model: a loaded model, in eval mode.
        wave: ``(T,)`` float32 waveform at 16 kHz.
        n_windows: windows to average; default from the model's metadata by ``purpose`` (3 retrieval,
            8 transfer).
        purpose: ``retrieval`` or ``transfer``.

    Returns:
        ``(joint_dim,)`` float32.

    Raises:
        MusicSearchError: if the model is in training mode (dropout would make embeddings random).
    """
    if model.training:
        raise MusicSearchError("the model is in training mode; call model.eval() for deterministic embeddings")
    n = n_windows or _default_windows(model, purpose)
    windows = torch.from_numpy(release_windows(wave, n, model.config.audio.window_samples))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        emb = model.encode_audio(windows.to(dev))  # (k, D)
        if model.config.objective == "classification":
            emb = F.normalize(emb, dim=-1)
        return emb.mean(0).float().cpu()


def release_tag_scores(model: TextToMusic, wave: np.ndarray, *, n_windows: int | None = None) -> torch.Tensor:
    """Classification: the release's tag scores, the mean over windows of ``sigmoid(fc_cls(normalised emb))``.

    Returns:
        ``(n_tags,)`` probabilities in ``config.tags`` order.
    """
    if model.config.objective != "classification":
        raise ConfigError("release_tag_scores needs a classification model")
    if model.training:
        raise MusicSearchError("the model is in training mode; call model.eval() for deterministic scores")
    n = n_windows or _default_windows(model, "retrieval")
    windows = torch.from_numpy(release_windows(wave, n, model.config.audio.window_samples))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        logits = model.head.logits(model.encode_audio(windows.to(dev)))  # type: ignore[operator]
        return torch.sigmoid(logits).mean(0).float().cpu()


def read_glove_tag_embeddings(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The release's ``ecals_annotation/glove_tag_embs.pt``: tag -> 300-d vector (what its GloVe models read).

    Raises:
        CheckpointError: if the file is unreadable or not a mapping of tags to vectors.
    """
    obj, _ = torch_load(path, allow_pickle=allow_pickle)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a mapping of tags to vectors")
    out = {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in obj.items()}
    dims = {v.shape[0] for v in out.values()}
    if len(dims) != 1:
        raise CheckpointError(f"{path}: tag vectors of several sizes {sorted(dims)}")
    return out


def encode_tags_release(
    model: TextToMusic, tag_lists: Sequence[Sequence[str]], tag_vectors: Mapping[str, np.ndarray]
) -> torch.Tensor:
    """GloVe variants: text embeddings exactly as the release formed them from tags.

    The release's GloVe text input is not free text: each tag has one vector (``glove_tag_embs.pt``) and a
    caption is the mean of its tags' vectors, then the text projector. Our ``encode_text`` instead averages the
    word vectors of free text, which equals this only for one-word tags from the same GloVe file.

    Args:
        model: a GloVe-variant model.
        tag_lists: ``N`` lists of tags (one tag for a tag query).
        tag_vectors: from :func:`read_glove_tag_embeddings`.

    Returns:
        ``(N, joint_dim)`` embeddings (not normalised).

    Raises:
        ConfigError: for a model without a text projector, or a tag without a vector.
    """
    if model.text_projector is None:
        raise ConfigError("encode_tags_release needs a model with a text tower (a GloVe variant)")
    rows = []
    for tags in tag_lists:
        missing = [t for t in tags if t not in tag_vectors]
        if missing or not tags:
            raise ConfigError(f"no tag vector for {missing or 'an empty tag list'}; use tags of the release's list")
        rows.append(np.mean([tag_vectors[t] for t in tags], axis=0))
    feats = torch.from_numpy(np.stack(rows).astype(np.float32))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        return model.text_projector(feats.to(dev))


# --- export ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """A written checkpoint: its path, SHA-256, and the largest embedding difference after reloading it."""

    path: Path
    sha256: str
    max_abs_diff: float | None


def _probe_texts(model: TextToMusic) -> list[str]:
    if model.config.objective == "classification":
        return list(model.config.tags[:3])
    return ["rock", "a calm piano piece for a rainy evening", "jazz, piano, mellow"]


def embedding_difference(a: TextToMusic, b: TextToMusic, *, seconds: float = 2.0, seed: int = 0) -> float:
    """Largest absolute difference of audio and text embeddings of two models on a fixed probe."""
    gen = torch.Generator().manual_seed(seed)
    n = min(a.config.audio.window_samples, int(seconds * a.config.audio.mel.sample_rate))
    wave = 0.1 * torch.randn(1, n, generator=gen)
    texts = _probe_texts(a)
    with torch.inference_mode():
        dev_a = next(a.parameters()).device
        dev_b = next(b.parameters()).device
        da = (a.encode_audio(wave.to(dev_a)).cpu() - b.encode_audio(wave.to(dev_b)).cpu()).abs().max()
        dt = (a.encode_text(texts).float().cpu() - b.encode_text(texts).float().cpu()).abs().max()
    return float(max(da, dt))


def export_model(
    model: TextToMusic,
    out: str | os.PathLike[str],
    *,
    half: bool = False,
    source: str | None = None,
    meta: Mapping[str, Any] | None = None,
    include_frozen_text: bool | None = None,
    verify: bool = True,
) -> ExportResult:
    """Write ``model`` in our checkpoint format (``.safetensors`` + config), so later loads need no conversion.

    The model's ``checkpoint_meta`` (source, conversion facts, preprocessing) is kept in the file's metadata,
    with ``exported`` (source name, time, precision). Published models store their fine-tuned text tower.

    Args:
        model: any loaded model.
        out: destination ``.safetensors`` path.
        half: store floating weights as float16.
        source: what was exported (a name or path), for the metadata.
        meta: extra metadata.
        include_frozen_text: also store frozen pretrained text weights (default: for published models).
        verify: reload the file and compare embeddings on a fixed probe (float32: must agree to 1e-5).

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: if the reloaded model's embeddings differ (float32).
    """
    info = dict(getattr(model, "checkpoint_meta", None) or {})
    info.update(meta or {})
    info["exported"] = {
        "from": source,
        "musicsearch": __version__,
        "half": half,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    published = bool(info.get("published"))
    include = published if include_frozen_text is None else include_frozen_text
    digest = save_model(
        model, out, meta=json.loads(json.dumps(info, default=str)), include_frozen_text=include, half=half
    )
    diff = None
    if verify:
        reloaded = load_model_file(out, sha256=digest)
        diff = embedding_difference(model.eval(), reloaded)
        if not half and diff > 1e-5:
            raise CheckpointError(f"{out} reloads to different embeddings (max abs diff {diff:.3g}); not exported")
    return ExportResult(Path(out), digest, diff)
