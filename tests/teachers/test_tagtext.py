"""Teacher tags as natural text."""

from musicsearch.teachers.musicnn import MSD_LABELS, MTT_LABELS
from musicsearch.teachers.tagtext import natural_tag_text, teacher_tag_texts


def test_examples_of_the_issue() -> None:
    assert natural_tag_text("00s") == "2000s"
    assert natural_tag_text("female") == "female vocals"
    assert natural_tag_text("easy listening") == "easy listening"
    assert natural_tag_text("Hip-Hop") == "hip hop"


def test_every_column_keeps_a_text() -> None:
    texts = teacher_tag_texts([MSD_LABELS, MTT_LABELS])
    assert len(texts) == 100
    assert all(t and t == t.strip().lower() for t in texts)
    assert not any(t[0].isdigit() and t.endswith("0s") and len(t) == 3 for t in texts)  # no bare decades
