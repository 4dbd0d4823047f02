"""durable.web: aiohttp routes for an engine (placeholder: the run inspector only, until it is merged with make_app)."""

from ._inspector import add_inspector

__all__ = ["add_inspector"]
