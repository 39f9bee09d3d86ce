"""Conversion of the paper's released ``best.pth`` files onto our :class:`~musicsearch.models.dual_encoder.TextToMusic`.

The release (Zenodo record 7322135) pickles ``{"epoch", "state_dict", "optimizer"}`` from a data-parallel model,
so every key carries a ``module.`` prefix. Our module names were chosen to match the release's (paper.md
section 11; ``models/audio_encoder.py``, ``models/dual_encoder.py``), so the mapping is short and strict:

- strip ``module.``;
- drop ``text_encoder.embeddings.position_ids`` (a constant ``arange`` buffer that older ``transformers`` saved and
  current versions do not expect); it is checked to be that constant before it is dropped;
- ``text_encoder.X`` becomes ``text_encoder.model.X`` (our text tower wraps the Hugging Face model as ``.model``);
- every other key is kept as it is; ``logit_scale`` and ``head.logit_scale`` (one parameter registered twice, in the
  release and in our model) must hold the same value.

Anything else that does not match is left for :func:`musicsearch.models.checkpoint.load_state_strict`, which
fails naming every missing, unexpected or mis-shaped key. :func:`release_key_shapes` writes out the published
layout at full size, independently of our modules, so a file can be checked (and a test can build one) without
instantiating a model.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from musicsearch.errors import CheckpointError

log = logging.getLogger(__name__)

RELEASE_PREFIX = "module."
RELEASE_TEXT_PREFIX = "text_encoder."
OUR_TEXT_PREFIX = "text_encoder.model."
#: Release keys that current ``transformers`` does not have (constant buffers), dropped after a check.
DROPPED_KEYS = ("text_encoder.embeddings.position_ids",)
#: The one parameter the contrastive model registers under two names.
SHARED_KEYS = ("logit_scale", "head.logit_scale")


@dataclass(frozen=True)
class BertDims:
    """Shape of a BERT text tower (defaults: ``bert-base-uncased``, as the release used)."""

    layers: int = 12
    hidden: int = 768
    intermediate: int = 3072
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2


BERT_BASE = BertDims()


def _bert_key_shapes(dims: BertDims, prefix: str = RELEASE_TEXT_PREFIX) -> dict[str, tuple[int, ...]]:
    """The standard Hugging Face ``BertModel`` keys (pooler included), with the old ``position_ids`` buffer."""
    h, i = dims.hidden, dims.intermediate
    out: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (dims.vocab, h),
        "embeddings.position_embeddings.weight": (dims.max_positions, h),
        "embeddings.token_type_embeddings.weight": (dims.type_vocab, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
        "embeddings.position_ids": (1, dims.max_positions),
    }
    for n in range(dims.layers):
        layer = f"encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            out[f"{layer}{name}.weight"] = (h, h)
            out[f"{layer}{name}.bias"] = (h,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[f"{layer}{name}.weight"] = (h,)
            out[f"{layer}{name}.bias"] = (h,)
        out[f"{layer}intermediate.dense.weight"] = (i, h)
        out[f"{layer}intermediate.dense.bias"] = (i,)
        out[f"{layer}output.dense.weight"] = (h, i)
        out[f"{layer}output.dense.bias"] = (h,)
    out["pooler.dense.weight"] = (h, h)
    out["pooler.dense.bias"] = (h,)
    return {prefix + k: v for k, v in out.items()}


def _batchnorm(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def release_key_shapes(
    objective: str,
    text_type: str,
    *,
    n_tags: int = 1054,
    bert: BertDims = BERT_BASE,
    glove_dim: int = 300,
) -> dict[str, tuple[int, ...]]:
    """Every key of a published ``state_dict`` (``module.`` prefix stripped) and its shape, per paper.md section 11.

    Written out from the paper's description of the release, not from our modules, so comparing it with
    ``TextToMusic.state_dict()`` tests our layout.

    Args:
        objective: ``contrastive``, ``triplet`` or ``classification``.
        text_type: ``bert``, ``glove`` (``tag`` for classification: no text tower).
        n_tags: classification head rows (1,054 ECALS tags).
        bert: BERT dimensions (``bert-base-uncased`` in the release; smaller in fast tests).
        glove_dim: word-vector size of the GloVe variants (300 in the release).

    Returns:
        ``{key: shape}``; shape ``()`` for the scalar ``num_batches_tracked`` buffers.
    """
    a = "audio_encoder."
    out: dict[str, tuple[int, ...]] = {
        f"{a}cls_token": (256,),
        f"{a}pos_embedding": (1, 513, 256),
        f"{a}audio_representation.spec_fn.window": (1024,),
        f"{a}audio_representation.mel_scale.fb": (513, 128),
    }
    out.update(_batchnorm(f"{a}frontend.input_bn", 1))
    for n in range(1, 5):
        c_in = 1 if n == 1 else 128
        layer = f"{a}frontend.layer{n}"
        convs = [("conv_1", "bn_1", c_in), ("conv_2", "bn_2", 128)] + ([("conv_3", "bn_3", c_in)] if n == 1 else [])
        for conv, bn, cin in convs:
            out[f"{layer}.{conv}.weight"] = (128, cin, 3, 3)
            out[f"{layer}.{conv}.bias"] = (128,)
            out.update(_batchnorm(f"{layer}.{bn}", 128))
    out[f"{a}frontend.fc.weight"] = (256, 1024)
    out[f"{a}frontend.fc.bias"] = (256,)
    for i in range(4):
        t = f"{a}transformer.layers.{i}"
        out[f"{t}.0.fn.norm.weight"] = (256,)
        out[f"{t}.0.fn.norm.bias"] = (256,)
        out[f"{t}.0.fn.fn.to_qkv.weight"] = (768, 256)
        out[f"{t}.0.fn.fn.to_out.0.weight"] = (256, 256)
        out[f"{t}.0.fn.fn.to_out.0.bias"] = (256,)
        out[f"{t}.1.fn.norm.weight"] = (256,)
        out[f"{t}.1.fn.norm.bias"] = (256,)
        out[f"{t}.1.fn.fn.net.0.weight"] = (1024, 256)
        out[f"{t}.1.fn.fn.net.0.bias"] = (1024,)
        out[f"{t}.1.fn.fn.net.3.weight"] = (256, 1024)
        out[f"{t}.1.fn.fn.net.3.bias"] = (256,)
    out["audio_projector.0.weight"] = (256,)
    out["audio_projector.0.bias"] = (256,)
    out["audio_projector.1.weight"] = (128, 256)
    if objective == "classification":
        out["head.fc_cls.weight"] = (n_tags, 128)
        return out
    if objective == "contrastive":
        out["logit_scale"] = (1,)
        out["head.logit_scale"] = (1,)
    if text_type == "bert":
        out.update(_bert_key_shapes(bert))
        d = bert.hidden
    elif text_type == "glove":
        d = glove_dim
    else:
        raise CheckpointError(f"unknown text type {text_type!r} for a {objective} release model (bert or glove)")
    out["text_projector.0.weight"] = (d,)
    out["text_projector.0.bias"] = (d,)
    out["text_projector.1.weight"] = (128, d)
    return out


@dataclass
class ConversionReport:
    """What the conversion did, for the exported checkpoint's metadata."""

    source: str
    epoch: int | None = None
    n_release_keys: int = 0
    n_converted: int = 0
    stripped_prefix: int = 0
    renamed_text_keys: int = 0
    dropped: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    other_entries: list[str] = field(default_factory=list)
    loader: str = "torch.load(weights_only=True)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def torch_load(path: str | os.PathLike[str], *, allow_pickle: bool = True) -> tuple[Any, str]:
    """``torch.load`` on CPU, safe unpickler first; the full unpickler only as an allowed, logged fallback.

    Args:
        path: a file written by ``torch.save``.
        allow_pickle: permit ``weights_only=False`` when the safe loader refuses the file. That can run code
            stored in the file: allow it only for files from a source you trust.

    Returns:
        ``(object, loader)``; ``loader`` names the call that succeeded (for provenance metadata).

    Raises:
        CheckpointError: if the file is unreadable, or needs the full unpickler and that is not allowed.
    """
    p = os.fspath(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True), "torch.load(weights_only=True)"
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise CheckpointError(
                f"{p} holds Python objects beyond tensors and plain containers, which the safe loader refuses "
                f"({str(exc).splitlines()[0][:200]}). If you trust the file's source, allow the full unpickler "
                f"(allow_pickle=True); it can run code stored in the file"
            ) from None
    except Exception as exc:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(
            f"{p} is not a readable PyTorch checkpoint ({exc.__class__.__name__}: {str(exc)[:200]}); "
            f"the file may be truncated or damaged: fetch it again"
        ) from None
    log.warning(
        "%s needs the full unpickler (weights_only=False), which can run code stored in the file; loading it "
        "because allow_pickle is set",
        p,
    )
    try:
        return torch.load(p, map_location="cpu", weights_only=False), "torch.load(weights_only=False)"
    except Exception as exc:
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint ({exc.__class__.__name__}: {exc})") from None


def read_release_checkpoint(
    path: str | os.PathLike[str], *, allow_pickle: bool = True
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Read a release ``best.pth``: its ``state_dict`` tensors and what else the file held.

    ``torch.load(weights_only=True)`` is tried first: it unpickles only tensors and plain containers, and the
    release's ``{epoch, state_dict, optimizer}`` needs nothing more. Only if that fails (a file holding other
    Python objects) and ``allow_pickle`` is true does it fall back to ``weights_only=False``, which runs
    arbitrary code stored in the file: do that only for a file from a source you trust (the checksum recorded
    on download says it is the same file as before, not that it is safe).

    Args:
        path: the ``best.pth`` file.
        allow_pickle: permit the unrestricted-unpickling fallback (logged as a warning).

    Returns:
        ``(state_dict, report)``; ``state_dict`` keys as stored (still with the ``module.`` prefix).

    Raises:
        CheckpointError: if the file is missing, unreadable, or holds no state dict of tensors.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"release checkpoint {p} does not exist")
    report = ConversionReport(source=p)
    obj, report.loader = torch_load(p, allow_pickle=allow_pickle)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        state = obj["state_dict"]
        report.other_entries = sorted(str(k) for k in obj if k != "state_dict")
        epoch = obj.get("epoch")
        report.epoch = int(epoch) if isinstance(epoch, int | float) else None
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare state dict (someone re-saved only the weights)
    else:
        kind = type(obj).__name__
        keys = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else []
        raise CheckpointError(
            f"{p} is not a release checkpoint: expected a dict with a 'state_dict' entry, got {kind} {keys}"
        )
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{p}: 'state_dict' is a {type(state).__name__}, not a dict of tensors")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{p}: state_dict entries that are not tensors: {bad[:10]}")
    report.n_release_keys = len(state)
    return {str(k): v for k, v in state.items()}, report


def strip_prefix(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Remove the data-parallel ``module.`` prefix where present; returns the new dict and how many had it."""
    out: dict[str, torch.Tensor] = {}
    n = 0
    for k, v in state.items():
        if k.startswith(RELEASE_PREFIX):
            k = k[len(RELEASE_PREFIX) :]
            n += 1
        if k in out:
            raise CheckpointError(f"key {k!r} occurs both with and without the {RELEASE_PREFIX!r} prefix")
        out[k] = v
    return out, n


def detect_release_kind(state: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """Objective and text tower of a release state dict (prefix stripped or not), from its keys.

    Returns:
        ``(objective, text_type)``: ``("classification", "tag")``, ``("contrastive" | "triplet", "bert" | "glove")``,
        or ``"unknown"`` in either place.
    """
    keys = {k[len(RELEASE_PREFIX) :] if k.startswith(RELEASE_PREFIX) else k for k in state}
    if "head.fc_cls.weight" in keys:
        return "classification", "tag"
    objective = "contrastive" if "logit_scale" in keys or "head.logit_scale" in keys else "triplet"
    if any(k.startswith(RELEASE_TEXT_PREFIX) for k in keys):
        text = "bert"
    elif "text_projector.0.weight" in keys:
        text = "glove"
    else:
        objective, text = "unknown", "unknown"
    return objective, text


def convert_release_state(
    state: Mapping[str, torch.Tensor], report: ConversionReport | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map a release ``state_dict`` onto our key names (see the module docstring for the rules).

    Args:
        state: the release's ``state_dict`` (with or without the ``module.`` prefix).
        report: the report of :func:`read_release_checkpoint`, filled in further (a new one when None).

    Returns:
        ``(tensors, report)``: tensors keyed by our names, ready for
        :func:`musicsearch.models.checkpoint.load_state_strict`.

    Raises:
        CheckpointError: if a dropped buffer is not the constant it should be, or the two names of
            ``logit_scale`` hold different values.
    """
    report = report or ConversionReport(source="state_dict", n_release_keys=len(state))
    stripped, report.stripped_prefix = strip_prefix(state)
    for key in DROPPED_KEYS:
        if key in stripped:
            value = stripped.pop(key)
            expected = torch.arange(value.shape[-1]).expand_as(value) if value.dim() else None
            if expected is None or not torch.equal(value.long(), expected):
                raise CheckpointError(
                    f"{report.source}: {key} should be the constant positions 0..n-1, but holds other values; "
                    f"the file is not a BERT model of the expected kind"
                )
            report.dropped.append(key)
    present = [k for k in SHARED_KEYS if k in stripped]
    if len(present) == 2:
        a, b = (stripped[k] for k in SHARED_KEYS)
        if a.shape != b.shape or not torch.equal(a, b):
            raise CheckpointError(
                f"{report.source}: logit_scale ({a.flatten()[:1].tolist()}) and head.logit_scale "
                f"({b.flatten()[:1].tolist()}) differ, but they are one parameter registered twice"
            )
    report.shared = present
    out: dict[str, torch.Tensor] = {}
    for k, v in stripped.items():
        if k.startswith(RELEASE_TEXT_PREFIX):
            k = OUR_TEXT_PREFIX + k[len(RELEASE_TEXT_PREFIX) :]
            report.renamed_text_keys += 1
        out[k] = v.detach().contiguous()
    report.n_converted = len(out)
    return out, report


def to_release_key(our_key: str) -> str:
    """Inverse of the renaming in :func:`convert_release_state` (our key -> the release's, without prefix)."""
    if our_key.startswith(OUR_TEXT_PREFIX):
        return RELEASE_TEXT_PREFIX + our_key[len(OUR_TEXT_PREFIX) :]
    return our_key
