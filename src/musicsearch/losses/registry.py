"""The training objectives by name: each one's loss head and what it asks of the model around it.

Code that depends on the objective asks this registry for a property, never compares the name::

    spec = objective("triplet")
    spec.text_tower                    # True: texts go through a text encoder into the joint space
    head = spec.build_head(config)     # the loss module, here a TripletHead

This module imports no torch: a head's class is imported when :meth:`Objective.build_head` is called, so the
properties serve torch-free code (reports, the query path) too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from musicsearch.errors import ConfigError
from musicsearch.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from musicsearch.models.config import ModelConfig


@dataclass(frozen=True)
class Objective:
    """One training objective: its loss head and the facts other modules decide by.

    Attributes:
        name: registry name (``contrastive``, ``triplet``, ``classification``).
        text_tower: texts go through a text encoder and projector. False: the model has no text tower; a text is a
            tag of its vocabulary and its embedding is that tag's classifier row.
        tag_head: the head holds one row per tag of ``config.tags``, so the vocabulary is part of the model.
        unit_audio: the head scores L2-normalised audio embeddings (the release therefore pooled a track as the
            mean of normalised window embeddings).
        learned_temperature: the head holds a learnable ``logit_scale`` (registered on the model as well).
        weighted_negatives: the loss draws explicit negatives, weighted by ``config.triplet_weighting``.
        min_batch: the smallest batch the loss is defined on (in-batch negatives need two items).
        default_lr: the release's learning rate for this objective whatever the text tower; None where it depends
            on the text tower (see :meth:`musicsearch.train.config.TrainConfig.resolved_lr`).
        head: builds the loss head from a :class:`~musicsearch.models.config.ModelConfig`.
    """

    name: str
    text_tower: bool
    tag_head: bool
    unit_audio: bool
    learned_temperature: bool
    weighted_negatives: bool
    min_batch: int
    default_lr: float | None
    head: Callable[[ModelConfig], nn.Module]

    def build_head(self, config: ModelConfig) -> nn.Module:
        """The loss head (an ``nn.Module`` whose ``forward`` returns the loss) for a model built from ``config``.

        Raises:
            ConfigError: for a tag head without a vocabulary (``config.tags`` empty).
        """
        if self.tag_head and not config.tags:
            raise ConfigError(f"a {self.name} model needs its tag vocabulary (config.tags)")
        return self.head(config)


def _contrastive_head(config: ModelConfig) -> nn.Module:
    from musicsearch.losses.contrastive import ContrastiveHead

    return ContrastiveHead(config.init_temperature, config.max_logit_scale)


def _triplet_head(config: ModelConfig) -> nn.Module:
    from musicsearch.losses.triplet import TripletHead

    return TripletHead(config.margin, config.triplet_weighting)


def _classification_head(config: ModelConfig) -> nn.Module:
    from musicsearch.losses.classification import ClassificationHead

    return ClassificationHead(config.joint_dim, len(config.tags))


OBJECTIVES: Registry[Objective] = Registry("objective")
for _spec in (
    Objective(
        name="contrastive",
        text_tower=True,
        tag_head=False,
        unit_audio=False,
        learned_temperature=True,
        weighted_negatives=False,
        min_batch=2,
        default_lr=None,
        head=_contrastive_head,
    ),
    Objective(
        name="triplet",
        text_tower=True,
        tag_head=False,
        unit_audio=False,
        learned_temperature=False,
        weighted_negatives=True,
        min_batch=2,
        default_lr=None,
        head=_triplet_head,
    ),
    Objective(
        name="classification",
        text_tower=False,
        tag_head=True,
        unit_audio=True,
        learned_temperature=False,
        weighted_negatives=False,
        min_batch=1,
        default_lr=1e-3,
        head=_classification_head,
    ),
):
    OBJECTIVES.add(_spec.name, _spec)


def objective(name: str) -> Objective:
    """The registered objective ``name``.

    Raises:
        ConfigError: naming the unknown objective and listing the known ones.
    """
    return OBJECTIVES.get(str(name))
