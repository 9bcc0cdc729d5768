"""Helpers shared by lgf's tests (not shipped): waiting, collecting, building fixtures, layering."""
