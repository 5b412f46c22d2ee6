"""Repos between machines and people: the catalog, git pull, zip and unzip."""
