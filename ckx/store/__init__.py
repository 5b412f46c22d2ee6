"""Repos, entries and their schemas, the SQLite index, the action context, and the generic actions on entries."""
