"""Curated prompt packs: the shipped library (data), the loader/validator, and team edits."""
