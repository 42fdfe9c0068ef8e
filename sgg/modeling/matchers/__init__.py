"""matchers (filled by later issues; each module registers itself on import)."""
from . import hungarian, speaq  # noqa: F401,E402  (registers HungarianMatcher, IterativeHungarianMatcher, SpeaQMatcher)
