"""The engine: the one place that orders the stages, for every driver (live, say, eval, bench)."""
