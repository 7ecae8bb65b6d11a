"""The built-in portal page, a static page over the HTTP API (`web/index.html` and `web/assets/`).

`install(app)` serves the page at `/` and its assets under `/portal/<version>/…`, where `<version>` is a digest
of every asset: the page names them with it, so a browser keeps them for a year without asking again
(`Cache-Control: immutable`) and a new release is fetched at once under its new version. The page itself is
revalidated on every visit (`no-cache` with an ETag: a 304 when unchanged). Relative imports between the
modules keep the version, since they resolve against the importing module's address. The files are read
once, when the app is made, and served from memory. `/portal/<file>` without a version also answers (never
cached without revalidation), as does an older version's address, for a tab opened before a release."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_VERSION = re.compile(r"[0-9a-f]{12}")
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> Asset:
        suffix = name[name.rfind("."):]
        media_type = MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return cls(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')

    def answer(self, request: Request, cache_control: str) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": cache_control}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.body if request.method == "GET" else b"", media_type=self.media_type,
                        headers={**headers, "Content-Length": str(len(self.body))})


def _read(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.update(_read(entry, f"{name}/"))
        elif not entry.name.startswith("."):
            found[name] = Asset.of(name, entry.read_bytes())
    return found


def install(app: FastAPI) -> None:
    assets = _read(files("web").joinpath("assets"))
    listing = "".join(f"{name} {assets[name].etag}\n" for name in sorted(assets))
    version = hashlib.sha256(listing.encode()).hexdigest()[:12]
    page_text = files("web").joinpath("index.html").read_text().replace('"/portal/', f'"/portal/{version}/')
    page = Asset.of("index.html", page_text.encode())

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def portal_home(request: Request) -> Response:
        return page.answer(request, REVALIDATE)

    @app.api_route("/portal/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def portal_asset(path: str, request: Request) -> Response:
        first, _, rest = path.partition("/")
        versioned = bool(_VERSION.fullmatch(first))
        asset = assets.get(rest if versioned else path)
        if asset is None:
            raise HTTPException(404, f"no portal file {path}")
        return asset.answer(request, IMMUTABLE if first == version else REVALIDATE)
