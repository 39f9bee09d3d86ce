"""A labelled music corpus made offline: procedural MIDI (styles, harmony, melody, bass, drums) rendered with
FluidSynth and a General MIDI soundfont, with ECALS-like tags and captions.

Entry points: :func:`~musicsearch.data.synth.corpus.make_corpus` (a whole corpus folder),
:func:`~musicsearch.data.synth.corpus.make_clip` (one clip), :func:`~musicsearch.data.synth.compose.compose_clip`
(the music without audio), :data:`~musicsearch.data.synth.tags.VOCABULARY` and
:data:`~musicsearch.data.synth.tags.HELDOUT_SYNONYMS`.
"""

from musicsearch.data.synth.corpus import GENERATOR_VERSION, CorpusSummary, make_clip, make_corpus
from musicsearch.data.synth.tags import CATEGORIES, HELDOUT_SYNONYMS, VOCABULARY

__all__ = [
    "CATEGORIES",
    "GENERATOR_VERSION",
    "HELDOUT_SYNONYMS",
    "VOCABULARY",
    "CorpusSummary",
    "make_clip",
    "make_corpus",
]
