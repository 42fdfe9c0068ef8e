"""Matchers in MATCHER_REGISTRY; each module registers itself on import."""

from . import hungarian, pair, speaq  # noqa: F401  (registers HungarianMatcher, IterativeHungarianMatcher,
#                                           PairHungarianMatcher, SpeaQMatcher)
