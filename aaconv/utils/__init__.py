"""Helpers every layer of aaconv may use: collectives, atomic file writes, state-dict loading, switching on
gradient checkpointing.

Nothing here imports from the rest of the package except `aaconv.errors`."""
