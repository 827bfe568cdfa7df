"""The web UI: a chat page at `/` and an operators' page at `/admin`, plain HTML + JS from the package.

The pages hold no powers of their own: the chat page uses only the public API (chat, duels, feedback
by its tokens) and the operators' page the admin API with the token the operator pastes in. So the
pages themselves are served to anyone, and every route here is a fixed file or StaticFiles' lookup.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# The pages load only their own scripts and styles, and may not be framed: the operators' page has
# buttons that move production traffic (clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def chat_page() -> FileResponse:
    """Chat with streamed answers, thumbs and comments, and duels of two answers."""
    return FileResponse(STATIC / "chat.html", headers=PAGE_HEADERS)


@router.get("/admin")
async def admin_page() -> FileResponse:
    """Operators: adapter lineage, gate reports, plots, promote / canary / rollback (data needs the token)."""
    return FileResponse(STATIC / "admin.html", headers=PAGE_HEADERS)


def install_ui(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
