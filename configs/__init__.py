"""Experiment configurations: default.py holds every field; one file per model overrides it."""
