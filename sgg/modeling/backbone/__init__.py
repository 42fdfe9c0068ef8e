"""backbone (filled by later issues; each module registers itself on import)."""
