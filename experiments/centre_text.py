"""Issue 13, seventh round: centre the text side of a model (remove the mean text direction from the joint space).

Cross-modal embeddings lie in narrow cones, and removing a modality's mean is a known remedy for hubness and the
"modality gap" (Liang et al., NeurIPS 2022). On the text side it is exact without a new layer: the text projection
is ``Linear(LayerNorm(x))`` without a bias, so subtracting ``beta * mu`` from every text's projection is the same as
subtracting ``beta * pinv(W) @ mu`` from the LayerNorm's bias (``W`` has full row rank). ``mu`` is the mean
projection (before normalisation) of the texts the model was trained on: the teachers' 100 tag texts and the corpus
cache's tags and captions (valid and train). The output is an ordinary checkpoint; score it with
``soft_compare.py``. (Centring the audio side as well was screened on the real-window cache first: it cost 20-25
points of genre agreement, so it is not offered.)

Usage::

    .venv/bin/python experiments/centre_text.py --model default --corpus-windows runs/soft3/corpus_windows.jsonl \
        --beta 0.5,1 --out runs/center1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("centre_text")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="the model to centre (name or checkpoint)")
    ap.add_argument("--corpus-windows", default="runs/soft3/corpus_windows.jsonl",
                    help="corpus windows whose tags and captions join the teachers' tag texts in the mean")  # fmt: skip
    ap.add_argument("--beta", default="0.5,1", help="comma-separated shares of the mean to remove")
    ap.add_argument("--out", required=True, help="folder for textc<100*beta>.safetensors")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from musicsearch.data.manifest import read_manifest
    from musicsearch.models.checkpoint import save_model
    from musicsearch.models.inference import embed_texts
    from musicsearch.models.loading import resolve_model
    from musicsearch.teachers.musicnn import labels_for
    from musicsearch.teachers.tagtext import teacher_tag_texts

    windows = [w for w in read_manifest(args.corpus_windows) if w.split != "test"]
    texts = sorted(
        set(teacher_tag_texts([labels_for("MSD_musicnn"), labels_for("MTT_musicnn")]))
        | {t for w in windows for t in w.tags}
        | {c for w in windows for c in (w.captions or ())}
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seen: list[torch.Tensor] = []  # the text projection's outputs, before normalisation
    for beta in (float(b) for b in args.beta.split(",")):
        model = resolve_model(args.model).model.eval()
        seen.clear()
        hook = model.text_projector.register_forward_hook(lambda _m, _i, o: seen.append(o.detach()))
        embed_texts(model, texts, batch_size=64)
        hook.remove()
        mu = torch.cat(seen).mean(dim=0)
        with torch.no_grad():
            model.text_projector[0].bias -= beta * (torch.linalg.pinv(model.text_projector[1].weight) @ mu)
        path = out / f"textc{round(100 * beta)}.safetensors"
        save_model(model, path, meta={"recipe": "experiments/centre_text.py", "model": args.model, "beta": beta})
        log.info("%d texts, |mean| %.3f, beta %.2f -> %s", len(texts), float(mu.norm()), beta, path)


if __name__ == "__main__":
    main()
