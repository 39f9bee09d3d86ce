"""Training objectives, chosen by name: ``contrastive``, ``triplet``, ``classification``."""

from musicsearch.losses.classification import ClassificationHead
from musicsearch.losses.contrastive import ContrastiveHead, info_nce
from musicsearch.losses.triplet import TripletHead, negative_weights, sample_negatives, triplet_hinge

__all__ = [
    "ClassificationHead",
    "ContrastiveHead",
    "TripletHead",
    "info_nce",
    "negative_weights",
    "sample_negatives",
    "triplet_hinge",
]
