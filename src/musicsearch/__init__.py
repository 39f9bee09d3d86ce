"""musicsearch: universal text-to-music retrieval.

One model, one joint embedding space, three kinds of query: a known tag, an unseen tag, a sentence.
After Doh, Won, Choi and Nam, "Toward Universal Text-to-Music Retrieval" (ICASSP 2023).

Importing the package is cheap: heavy modules (torch models, indexes, the web service) load on first use.
"""

from musicsearch.errors import MusicSearchError

__version__ = "0.1.0"

__all__ = ["MusicSearchError", "__version__"]
