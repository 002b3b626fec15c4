"""What the web app refuses: paths out of the data folder in every spelling, other sites, other browsers' data, and
writes outside the sessions folder. Each case is listed with its outcome in the README (security section)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from app_fixtures import make_data_root, wait_job  # noqa: E402
from fmscope.app import AppConfig, create_app  # noqa: E402
from fmscope.app import server as server_module  # noqa: E402

ESCAPES = [
    "../secret",
    "../secret/private.tif",
    "..%2fsecret",
    "%2e%2e/secret",
    "%252e%252e/secret",
    "stacks/../../secret",
    "stacks/./../../secret/private.tif",
    "/etc/passwd",
    "//etc/passwd",
    "C:/Windows/win.ini",
    "stacks\\..\\..\\secret",
    "stacks/\x00x",
    "escape",
    "escape/private.tif",
]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[SimpleNamespace]:
    data = tmp_path / "data"
    data.mkdir()
    make_data_root(data)
    config = AppConfig(data_root=data, sessions=tmp_path / "sessions", allowed_hosts=("testserver",),
                       max_upload=100_000)  # fmt: skip
    with TestClient(create_app(config)) as client:
        yield SimpleNamespace(client=client, config=config, tmp=tmp_path, data=data)


@pytest.mark.parametrize("path", ESCAPES)
def test_no_path_leaves_the_data_folder(env: SimpleNamespace, path: str) -> None:
    for r in (
        env.client.get("/api/files", params={"path": path}),
        env.client.post("/api/images", json={"path": path}),
        env.client.post("/api/sessions/s-000000000000/compare", json={"path": path}),
    ):
        assert r.status_code in (403, 404), (path, r.status_code, r.text)
        assert str(env.tmp) not in r.text and "private" not in r.text.replace(path, "")  # nothing about the file


def test_files_inside_stay_reachable(env: SimpleNamespace) -> None:
    assert env.client.post("/api/images", json={"path": "stacks/./balls.tif"}).status_code == 200
    assert env.client.post("/api/images", json={"path": "stacks//balls.tif"}).status_code == 200


def test_a_link_inside_the_root_is_followed_one_outside_is_not(env: SimpleNamespace) -> None:
    (env.data / "inner").symlink_to(env.data / "stacks", target_is_directory=True)
    assert env.client.post("/api/images", json={"path": "inner/balls.tif"}).status_code == 200
    names = [e["name"] for e in env.client.get("/api/files").json()["entries"]]
    assert "inner" in names and "escape" not in names


def test_files_that_read_other_files_are_refused(env: SimpleNamespace) -> None:
    """An HDF5 file inside the root with an external link, or raw data stored in a file outside, would let the
    reader open that file: refused before reading."""
    import h5py

    outside = env.tmp / "secret" / "other.h5"
    with h5py.File(outside, "w") as f:
        f["data"] = np.zeros((4, 8, 8), np.uint16)
    with h5py.File(env.data / "linked.h5", "w") as f:
        f["data"] = h5py.ExternalLink(str(outside), "data")
    raw = env.tmp / "secret" / "raw.bin"
    raw.write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    with h5py.File(env.data / "external.h5", "w") as f:
        f.create_dataset("data", shape=(8, 8), dtype=np.uint8, external=[(str(raw), 0, 64)])
    for name in ("linked.h5", "external.h5"):
        r = env.client.post("/api/images", json={"path": name})
        assert r.status_code == 403 and "reads other files" in r.json()["error"], r.text
        assert str(env.tmp) not in r.json()["error"]  # the file is named, not where it is


def test_oversized_requests_are_refused(env: SimpleNamespace) -> None:
    r = env.client.post("/api/images", content=b"{" + b" " * (17 * 2**20) + b"}")
    assert r.status_code == 413 and "JSON" in r.json()["error"]


def test_other_hosts_and_sites_are_refused(env: SimpleNamespace) -> None:
    r = env.client.get("/api/info", headers={"host": "evil.example:8765"})
    assert r.status_code == 400 and "not served here" in r.json()["error"]  # DNS rebinding
    r = env.client.post("/api/images", json={"path": "plain.tif"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403  # a page of another site cannot change anything
    r = env.client.post("/api/images", json={"path": "plain.tif"}, headers={"origin": "http://testserver"})
    assert r.status_code == 200


def test_the_cookie_is_private_and_each_browser_sees_only_its_sessions(env: SimpleNamespace) -> None:
    first = env.client.get("/api/info")
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    job = env.client.post("/api/sessions", json={"image": {"path": "stacks/balls.tif"}}).json()
    sid = wait_job(env.client, job)["result"]["session"]
    name = env.client.post(f"/api/sessions/{sid}/export", json={"what": "prompts"}).json()["name"]
    with TestClient(create_app(env.config)) as other:
        assert other.get(f"/api/sessions/{sid}").status_code == 404
        assert other.get(f"/api/sessions/{sid}/exports/{name}").status_code == 404
        assert other.post(f"/api/sessions/{sid}/edit", json={"op": "new_object"}).status_code == 404
        assert other.get("/api/sessions").json()["sessions"] == []
    for bad in ("../state.json", "..%2Fstate.json", "%2e%2e%2fsession.json"):
        assert env.client.get(f"/api/sessions/{sid}/exports/{bad}").status_code == 404
    for bad_id in ("s-../../x", "..", "s-00000000000g"):
        assert env.client.get(f"/api/sessions/{bad_id}").status_code == 404
    folders = [p.name for p in Path(env.config.sessions).iterdir()]
    assert len(folders) == 1 and len(folders[0]) == 24  # a hash of the cookie, never the cookie itself
    assert env.client.cookies.get("fmscope_client") not in folders[0]


def test_uploads_over_the_limit_never_reach_the_disk_whole(env: SimpleNamespace) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b"\0" * 10_000  # 300 kB in chunks, no Content-Length

    r = env.client.post("/api/uploads", params={"name": "big.tif"}, content=chunks())
    assert r.status_code == 413
    assert not [p for p in Path(env.config.sessions).rglob("*") if p.is_file() and p.stat().st_size >= 100_000]


def test_nothing_is_written_outside_the_sessions_folder(env: SimpleNamespace) -> None:
    def snapshot() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in env.tmp.rglob("*")
                if p.is_file() and env.config.sessions not in p.resolve().parents}  # fmt: skip

    before = snapshot()
    c = env.client
    sid = wait_job(c, c.post("/api/sessions", json={"image": {"path": "stacks/balls.tif"}}).json())["result"]["session"]
    c.post(f"/api/sessions/{sid}/edit", json={"op": "new_object"})
    c.post(f"/api/sessions/{sid}/edit", json={"op": "add_point", "id": 1, "z": 4, "y": 20, "x": 22})
    wait_job(c, c.post(f"/api/sessions/{sid}/propagate", json={}).json())
    for what in ("labels", "morphometry", "prompts", "record"):
        assert c.post(f"/api/sessions/{sid}/export", json={"what": what, "format": "ome.zarr"}).status_code == 200
    wait_job(c, c.post(f"/api/sessions/{sid}/compare", json={"path": "stacks/balls_labels.tif"}).json())
    c.post("/api/uploads", params={"name": "up.tif"}, content=b"II*\x00")
    assert snapshot() == before


def test_a_non_local_address_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    (tmp_path / "d").mkdir()
    with caplog.at_level(logging.WARNING, logger="fmscope.app.server"):
        server_module.serve(AppConfig(data_root=tmp_path / "d", sessions=tmp_path / "s", host="0.0.0.0"))
    assert calls[0]["host"] == "0.0.0.0" and "anyone who can reach this machine" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fmscope.app.server"):
        server_module.serve(AppConfig(data_root=tmp_path / "d", sessions=tmp_path / "s"))
    assert calls[1]["host"] == "127.0.0.1" and "anyone" not in caplog.text


def test_no_route_runs_what_it_is_sent(tmp_path: Path) -> None:
    """The API has a fixed list of routes; none takes code, expressions or shell commands (checked by name and by
    the edit table, whose operations are the session's own methods)."""
    from fmscope.app.edits import EDITS
    from fmscope.interactive.session import Session

    assert all(hasattr(Session, op) for op in EDITS)
    app = create_app(AppConfig(data_root=tmp_path, sessions=tmp_path / "sessions"))
    routes = {getattr(r, "path", "") for r in app.routes}
    assert not any(word in path for path in routes for word in ("eval", "exec", "shell", "run", "python"))
