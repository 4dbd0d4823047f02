"""Serving the control panel's files from ``static/``, and nothing outside it.

``/`` is ``static/index.html``; ``/<path>`` and ``/static/<path>`` are files of
``static/``. A request can never leave the folder: the path aiohttp hands us is
already percent-decoded once (``%2e%2e`` arrives as ``..``); it must consist of
plain segments (no empty, ``.``, ``..`` or hidden segment, no backslash or NUL),
and the resolved file (symlinks followed) must still lie inside ``static/``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .errors import ApiError

__all__ = ["static_routes"]

_NOT_FOUND = "Not found: no route or file at this path"


def _resolve(root: Path, relative: str) -> Path:
    segments = relative.split("/")
    for segment in segments:
        if not segment or segment.startswith(".") or "\\" in segment or "\x00" in segment or ":" in segment:
            raise ApiError(404, _NOT_FOUND)
    candidate = root.joinpath(*segments).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        raise ApiError(404, _NOT_FOUND)
    return candidate


def static_routes(static_dir: Path) -> list[web.RouteDef]:
    """``GET /`` and the catch-all file route; add them after every other route.

    The catch-all skips ``/api/``, so that a wrong method on an API route is a
    405 and an unknown API path a plain 404.
    """
    root = static_dir.resolve()

    async def index(request: web.Request) -> web.FileResponse:
        return _file(_resolve(root, "index.html"))

    async def files(request: web.Request) -> web.FileResponse:
        relative = request.match_info["path"]
        if relative == "api":
            raise ApiError(404, _NOT_FOUND)
        if request.method not in ("GET", "HEAD"):
            raise ApiError(405, "Method not allowed: use GET", headers={"Allow": "GET, HEAD"})
        if relative.startswith("static/"):
            relative = relative.removeprefix("static/")
        return _file(_resolve(root, relative))

    return [web.get("/", index), web.route("*", r"/{path:(?!api/).+}", files)]


def _file(path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})
