"""Procedural demo-data generators that write each real dataset's exact on-disk format."""
