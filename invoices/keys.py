"""Typed keys of the aiohttp application state."""

from __future__ import annotations

from aiohttp import web

from durable import Engine

from .sse import SseHub
from .store import InvoiceStore

__all__ = ["engine_key", "hub_key", "store_key"]

engine_key = web.AppKey("engine", Engine)
store_key = web.AppKey("store", InvoiceStore)
hub_key = web.AppKey("sse_hub", SseHub)
