"""Record musicnn's TensorFlow outputs, so the PyTorch port is tested against them without TensorFlow.

Run in a throwaway environment that has TensorFlow (never in the project's ``.venv``)::

    python3 -m venv /tmp/musicnn-tf
    /tmp/musicnn-tf/bin/pip install tensorflow-cpu tf-keras librosa soundfile
    /tmp/musicnn-tf/bin/pip install --no-deps musicnn
    TF_USE_LEGACY_KERAS=1 /tmp/musicnn-tf/bin/python tests/teachers/make_reference.py \\
        --out tests/teachers/data/reference --fixtures tests/teachers/data

This script does not import ``musicsearch`` (the throwaway environment has no torch). It writes:

- ``OUT/musicnn_tf_outputs.json``: for three of the shipped recordings and the four shipped models, the taggram
  (sigmoid outputs per 3 s patch) and the penultimate features (first patches) of the original TF graph
  (``musicnn.models.define_model`` restored with ``Saver.restore``, as ``musicnn.extractor.extractor`` runs it,
  whose taggram is checked equal); plus, per model, the outputs for a fixed synthetic input
  batch (``3 + 2 * sin(0.01 * k)``, bit-identical in numpy and torch) that tests the network alone.
  ``extractor.batch_data`` is replaced by a copy that restores the semantics of the software musicnn was
  released with (see :func:`batch_data_2019`). The unmodified extractor is also run, and how far its taggram
  falls from that (and the fraction of its input that overflows to ``inf`` under numpy 2) is recorded.
- ``OUT/librosa_mel.json``: librosa's mel filterbank (non-zero entries) and the log-mel of the first 64 frames of
  the Brahms recording for both STFT pad modes.
- ``OUT/bundle_tf_listing.json``: every checkpoint variable as TensorFlow's own reader sees it (shape, dtype,
  sum, first values).
- ``FIXTURES/tiny_bundle.*``: a small TF checkpoint written by ``tf.raw_ops.SaveV2`` with many dtypes, and
  ``FIXTURES/tiny_bundle.json`` with its expected contents.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MUSIC = HERE.parents[1] / "src" / "musicsearch" / "assets" / "librosa_music"
CLIPS = (
    "brahms-hungarian-dance-5-string-orchestra.ogg",
    "lena-orsa-pistachio-ice-cream-ragtime.ogg",
    "sorohanro-solo-trumpet.ogg",
)
MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")
PENULTIMATE_PATCHES = 4  # penultimate features recorded for the first patches only (file size)
SIG = 7  # significant digits written


def _r(a: Any) -> Any:
    """Nested lists of floats rounded to SIG significant digits (float32 holds about 7.2)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim <= 1:
        return [float(f"{x:.{SIG}g}") for x in arr.ravel()]
    return [_r(row) for row in arr]


def synthetic_batch() -> np.ndarray:
    """A deterministic ``(2, 187, 96)`` float32 input in the range of real log-mels (1..5)."""
    k = np.arange(2 * 187 * 96, dtype=np.float32)
    return (3.0 + 2.0 * np.sin(np.float32(0.01) * k)).astype(np.float32).reshape(2, 187, 96)


def batch_data_2019(audio_file: str, n_frames: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """``musicnn.extractor.batch_data`` as it behaved with the libraries of its release (2019).

    Two library changes since then alter its result, so both are undone here:

    - librosa < 0.10 padded the centred STFT by reflection (``pad_mode="reflect"``); librosa >= 0.10 pads
      with zeros.
    - numpy < 2 promoted ``10000 * float16_array`` to float32 (value-based casting); numpy >= 2 keeps float16,
      which overflows to ``inf`` for mel values above 6.55, common in loud music. The mel is still rounded to
      float16 as the original does.
    """
    import librosa

    audio, sr = librosa.load(audio_file, sr=16000)
    rep = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96, pad_mode="reflect").T
    rep = rep.astype(np.float16)
    rep = np.log10(10000 * rep.astype(np.float32) + 1)
    last = rep.shape[0] - n_frames + 1
    batch = np.stack([rep[t : t + n_frames] for t in range(0, last, overlap)])
    return batch, rep


def run_graph(model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The musicnn TF graph (``musicnn.models.define_model``) restored from the package, run on ``batch``."""
    import tensorflow as tf
    from musicnn import configuration, models

    n_classes = 50
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, batch.shape[1], configuration.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        outs = models.define_model(x, is_training, model, n_classes)
        probs = tf.nn.sigmoid(outs[0])
    fetch = {"taggram": probs}
    if "vgg" in model:
        fetch["penultimate"] = tf.compat.v1.layers.flatten(outs[5])
    else:
        fetch["penultimate"] = outs[8]
        fetch["mean_pool"] = outs[6]
        fetch["max_pool"] = outs[7]
    import musicnn

    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, os.path.dirname(musicnn.__file__) + "/" + model + "/")
        return {k: np.asarray(v) for k, v in sess.run(fetch, feed_dict={x: batch, is_training: False}).items()}


def record_outputs(out: Path) -> None:
    import librosa
    import tensorflow as tf
    from musicnn import extractor

    result: dict[str, Any] = {
        "about": "musicnn TF reference outputs; see make_reference.py for how they were made",
        "versions": {
            "tensorflow": tf.__version__,
            "librosa": librosa.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "front_end": {"pad_mode": "reflect", "float16_mel": True, "log": "log10(1 + 10000 * mel) in float32"},
        "penultimate_patches": PENULTIMATE_PATCHES,
        "clips": {},
        "synthetic": {},
    }
    syn = synthetic_batch()
    for model in MODELS:
        o = run_graph(model, syn)
        result["synthetic"][model] = {"taggram": _r(o["taggram"]), "penultimate": _r(o["penultimate"])}
        if "mean_pool" in o:  # first patch only (file size)
            result["synthetic"][model]["mean_pool"] = _r(o["mean_pool"][:1])
            result["synthetic"][model]["max_pool"] = _r(o["max_pool"][:1])
    original_batch_data = extractor.batch_data
    for clip in CLIPS:
        path = str(MUSIC / clip)
        batch, _ = batch_data_2019(path, 187, 187)
        raw_batch, _ = original_batch_data(path, 187, 187)
        entry: dict[str, Any] = {"n_samples": int(librosa.load(path, sr=16000)[0].shape[0]), "models": {}}
        for model in MODELS:
            # The features the extractor returns repeat the first patch's mid/back-end features for every later
            # patch (its loop unpacks fresh values into other names), so they are taken from the graph directly.
            o = run_graph(model, batch)
            extractor.batch_data = batch_data_2019
            taggram, labels = extractor.extractor(path, model=model, extract_features=False)
            extractor.batch_data = original_batch_data
            as_is, _ = extractor.extractor(path, model=model, extract_features=False)
            entry["models"][model] = {
                "labels": list(labels),
                "taggram": _r(o["taggram"]),
                "penultimate": _r(o["penultimate"][:PENULTIMATE_PATCHES]),
                "extractor_vs_graph_max_abs_diff": float(np.max(np.abs(taggram - o["taggram"]))),
                "as_is_max_abs_diff": float(np.max(np.abs(as_is - o["taggram"]))),
                "as_is_nonfinite_input_fraction": float(np.mean(~np.isfinite(raw_batch))),
            }
        result["clips"][clip] = entry
    (out / "musicnn_tf_outputs.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")


def record_mel(out: Path) -> None:
    import librosa

    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)  # (96, 257)
    rows, cols = np.nonzero(fb)
    audio, _ = librosa.load(str(MUSIC / CLIPS[0]), sr=16000)
    seg = audio[: 23 * 256]  # 24 frames; the first and last show the padding
    logmel = {}
    for mode in ("reflect", "constant"):
        m = librosa.feature.melspectrogram(y=seg, sr=16000, hop_length=256, n_fft=512, n_mels=96, pad_mode=mode).T
        logmel[mode] = _r(np.log10(10000 * m.astype(np.float32) + 1))
    result = {
        "about": "librosa.filters.mel(sr=16000, n_fft=512, n_mels=96) non-zeros [mel, bin, weight], and "
        "log10(1 + 10000 * mel) (frames, 96) of the first 23 * 256 samples of " + CLIPS[0],
        "librosa": librosa.__version__,
        "filterbank_shape": list(fb.shape),
        "filterbank_nonzero": [[int(r), int(c), float(f"{fb[r, c]:.9g}")] for r, c in zip(rows, cols)],
        "n_samples": int(seg.shape[0]),
        "logmel": logmel,
    }
    (out / "librosa_mel.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")


def record_bundles(out: Path) -> None:
    import musicnn
    import tensorflow as tf

    listing: dict[str, Any] = {}
    for model in MODELS:
        reader = tf.compat.v1.train.NewCheckpointReader(os.path.dirname(musicnn.__file__) + "/" + model + "/")
        dtypes = reader.get_variable_to_dtype_map()
        entries = {}
        for name, shape in sorted(reader.get_variable_to_shape_map().items()):
            if name.endswith(("/Adam", "/Adam_1")):
                continue  # optimizer state: listed by name only
            value = reader.get_tensor(name)
            entries[name] = {
                "shape": list(shape),
                "dtype": dtypes[name].name,
                "sum": float(np.sum(value, dtype=np.float64)),
                "first": [float(v) for v in np.ravel(value)[:4]],
            }
        adam = sorted(n for n in reader.get_variable_to_shape_map() if n.endswith(("/Adam", "/Adam_1")))
        listing[model] = {"variables": entries, "optimizer_variables": adam}
    (out / "bundle_tf_listing.json").write_text(json.dumps(listing, indent=0) + "\n")


def tiny_bundle_spec() -> dict[str, tuple[str, list[int], list[Any]]]:
    """Tensors of the tiny fixture: name -> (numpy dtype name, shape, flat values)."""
    return {
        "a/float32": ("float32", [2, 3], [0.5, -1.25, 3.0e-3, 1e20, -0.0, 7.0]),
        "b/float64": ("float64", [4], [1.0 / 3.0, -2.5, 1e-300, 6.02214076e23]),
        "c/int32": ("int32", [2, 2], [-2147483648, -1, 0, 2147483647]),
        "d/int64": ("int64", [], [-5]),
        "e/float16": ("float16", [3], [0.5, -65504.0, 0.0999755859375]),
        "f/bool": ("bool", [5], [True, False, True, True, False]),
        "g/uint8": ("uint8", [4], [0, 1, 128, 255]),
        "h/int8": ("int8", [2], [-128, 127]),
        "i/uint16": ("uint16", [2], [0, 65535]),
        "j/int16": ("int16", [3], [-32768, 0, 32767]),
        "k/empty": ("float32", [0, 4], []),
        "l/string": ("string", [3], ["", "musicnn", "zażółć"]),
        "m/long/variable/name/with/a/shared/prefix/one": ("float32", [1], [1.0]),
        "m/long/variable/name/with/a/shared/prefix/two": ("float32", [1], [2.0]),
    }


def write_tiny_bundle(fixtures: Path) -> None:
    import tensorflow as tf

    fixtures.mkdir(parents=True, exist_ok=True)
    spec = tiny_bundle_spec()
    names, tensors = [], []
    for name, (dtype, shape, values) in spec.items():
        if dtype == "string":
            t = tf.constant(np.array([v.encode("utf-8") for v in values], dtype=object).reshape(shape))
        else:
            t = tf.constant(np.array(values, dtype=dtype).reshape(shape))
        names.append(name)
        tensors.append(t)
    prefix = str(fixtures / "tiny_bundle")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    (fixtures / "tiny_bundle.json").write_text(
        json.dumps({n: {"dtype": d, "shape": s, "values": v} for n, (d, s, v) in spec.items()}, indent=1) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the reference JSON files")
    parser.add_argument("--fixtures", type=Path, default=None, help="folder for the tiny TF bundle fixture")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fixtures is not None:
        write_tiny_bundle(args.fixtures)  # eager mode: before musicnn.extractor disables it
    record_bundles(args.out)
    record_mel(args.out)
    record_outputs(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
