"""``python -m musicsearch`` runs the CLI."""

from musicsearch.cli.main import entry

entry()
