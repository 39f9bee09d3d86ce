"""Pretrained teacher models for real music, run in PyTorch without their original frameworks.

- :mod:`musicsearch.teachers.tfbundle`: read TensorFlow V2 checkpoints (``.index`` + ``.data-*``) with numpy.
- :mod:`musicsearch.teachers.musicnn`: the musicnn and VGG taggers of PyPI ``musicnn`` (Pons and Serra, 2019),
  their input pipeline and the loading of the shipped checkpoints.
- :mod:`musicsearch.teachers.tagger`: :class:`~musicsearch.teachers.tagger.MusicnnTagger`, tags and embeddings
  of recordings (``musicsearch tag FILE``).
- ``tests/teachers/make_reference.py`` (not part of the library): records TensorFlow's outputs (run in a throwaway
  TensorFlow environment) for the tests.
"""
