"""The UI's static routes on the real app (no engine needed): the pages and every file they link are
served from the package with their security headers, and no request path makes them fail."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings
from serving.ui import STATIC

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = ServingSettings(_env_file=None, home=tmp_path_factory.mktemp("ui-home"), admin_token="x" * 32)
    return TestClient(create_app(settings), raise_server_exceptions=False)  # no `with`: the engine is not started


@pytest.mark.parametrize(("path", "title"), [("/", "rlhf-loop chat"), ("/admin", "rlhf-loop operators")])
def test_pages_and_everything_they_link_are_served(client: TestClient, path: str, title: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"<title>{title}</title>" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    linked = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert linked, "the page links its own scripts and styles"
    for url in linked:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] in ("text/javascript", "text/css", "image/svg+xml"), url
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text), "no CDN: the machines are offline"


def test_every_static_file_ships_in_the_package() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serving"]
    files = [path.relative_to(STATIC.parent).as_posix() for path in STATIC.iterdir()]
    assert files and all(any(fnmatch.fnmatch(name, glob) for glob in globs) for name in files), (files, globs)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/static/"), ("GET", "/static/missing.js"), ("GET", "/static/../pyproject.toml"),
    ("GET", "/static/%2e%2e/%2e%2e/pyproject.toml"), ("GET", "/static/..%2fui.py"), ("GET", "/static/%2fetc%2fpasswd"),
    ("GET", "/static//etc/passwd"), ("GET", "/static/%00"), ("GET", "/static/chat.js%00.png"), ("GET", "/static/%ff"),
    ("GET", "/static/" + "a" * 5000), ("GET", "/static/" + "a/" * 2000), ("GET", "/static/chat.js/x"),
    ("GET", "/static/\\..\\ui.py"), ("GET", "/admin%00"), ("POST", "/"), ("DELETE", "/admin"), ("PUT", "/static/chat.js"),
])
def test_bad_paths_and_methods_are_a_4xx_that_reveals_nothing(client: TestClient, method: str, path: str) -> None:
    reply = client.request(method, path)
    assert 400 <= reply.status_code < 500, (path, reply.status_code)
    assert reply.json()["error"]["code"] == reply.status_code  # the OpenAI error shape, like every other error
    assert "setuptools" not in reply.text and "import" not in reply.text


def test_query_strings_do_not_change_the_pages(client: TestClient) -> None:
    assert client.get("/?q=%ff%fe%00<script>").content == client.get("/").content
    assert client.get("/admin?token=x").content == client.get("/admin").content
