"""The web app's API (FastAPI TestClient): every route, with the bad inputs of issue 12; the page calls the same."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from app_fixtures import CENTRES, SHAPE, make_data_root, raw_array, wait_job  # noqa: E402
from fmscope.app import AppConfig, create_app  # noqa: E402
from fmscope.interactive import ObjectPrompt, StackConfig, segment_prompted  # noqa: E402
from fmscope.interactive.rf_backend import RandomForestPrompter  # noqa: E402
from fmscope.io import read_image  # noqa: E402
from fmscope.metrics import dice  # noqa: E402


def _config(tmp: Path, **kw: Any) -> AppConfig:
    (tmp / "ckpt").mkdir(exist_ok=True)
    return AppConfig(data_root=tmp / "data", sessions=tmp / "sessions", cache_dir=tmp / "ckpt",
                     allowed_hosts=("testserver",), **kw)  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> Iterator[SimpleNamespace]:
    (tmp_path / "data").mkdir()
    arrays = make_data_root(tmp_path / "data")
    config = _config(tmp_path, max_upload=300_000)
    with TestClient(create_app(config)) as client:
        yield SimpleNamespace(client=client, config=config, tmp=tmp_path, **arrays)


def new_session(client: TestClient, path: str = "stacks/balls.tif", **extra: Any) -> str:
    job = client.post("/api/sessions", json={"image": {"path": path}, **extra})
    assert job.status_code == 200, job.text
    done = wait_job(client, job.json())
    assert done["state"] == "done", done
    return str(done["result"]["session"])


def edit(client: TestClient, sid: str, **change: Any) -> dict[str, Any]:
    revision = client.get(f"/api/sessions/{sid}").json()["revision"]
    r = client.post(f"/api/sessions/{sid}/edit", json={**change, "revision": revision})
    assert r.status_code == 200, r.text
    return dict(r.json())


def labels_of(client: TestClient, sid: str, z: int) -> np.ndarray:
    return raw_array(client.get(f"/api/sessions/{sid}/labels/{z}"))


# ---- data ------------------------------------------------------------------------------------------------------


def test_info_lists_backends_with_their_reasons(env: SimpleNamespace) -> None:
    info = env.client.get("/api/info").json()
    status = {b["name"]: b for b in info["backends"]}
    assert status["rf"]["available"] and status["rf"]["abilities"] == ["transfer", "phases"]
    assert not status["sam"]["available"] and "checkpoint" in status["sam"]["reason"] + status["sam"]["reason"]
    assert not info["grounding"]["available"] and "--grounding" in info["grounding"]["reason"]
    assert info["default_init"] in info["shipped"]  # what the training panel preselects
    (env.tmp / "ckpt" / "sam_vit_b_01ec64.pth").write_bytes(b"\0" * 1000)  # an interrupted download
    sam = {b["name"]: b for b in env.client.get("/api/info").json()["backends"]}["sam"]
    if "package is not installed" not in sam["reason"]:
        assert not sam["available"] and "wrong size" in sam["reason"] and "sam_vit_b_01ec64.pth" in sam["reason"]


def test_file_list_marks_images_folders_and_stops_at_the_root(env: SimpleNamespace) -> None:
    root = env.client.get("/api/files").json()["entries"]
    kinds = {e["name"]: e["kind"] for e in root}
    assert kinds == {
        "slices": "folder",
        "stacks": "folder",
        "broken.tif": "image",
        "notes.txt": "file",
        "plain.tif": "image",
    }  # the link out of the root is not listed
    assert next(e for e in root if e["name"] == "slices")["slices"] is True
    stacks = {e["name"]: e for e in env.client.get("/api/files", params={"path": "stacks"}).json()["entries"]}
    assert stacks["balls.ome.zarr"]["kind"] == "image" and stacks["balls.ome.zarr"]["format"] == "ome-zarr"


@pytest.mark.parametrize("path", ["stacks/balls.tif", "stacks/balls.ome.zarr", "slices"])
def test_open_an_image_and_read_slices_raw(env: SimpleNamespace, path: str) -> None:
    info = env.client.post("/api/images", json={"path": path}).json()
    depth = 3 if path == "slices" else SHAPE[0]
    assert info["shape"] == [depth, *SHAPE[1:]] and info["dtype"] == "uint16" and info["axes"] == "ZYX"
    lo, hi = info["histogram"]["window"]
    assert info["histogram"]["min"] <= lo < hi <= info["histogram"]["max"] and len(info["histogram"]["counts"]) == 256
    if path != "slices":
        assert info["spacing"] == [2.0, 0.5, 0.5] and info["unit"] == "micrometer"
    r = env.client.get(f"/api/images/{info['id']}/slice/2")
    assert r.headers["x-dtype"] == "uint16" and r.headers["x-step"] == "1"
    np.testing.assert_array_equal(raw_array(r), env.image[2])  # 16-bit data stay raw
    part = env.client.get(f"/api/images/{info['id']}/slice/2", params={"region": "10,20,50,60", "max_side": 16})
    assert part.headers["x-step"] == "3" and part.headers["x-region"] == "10,20,50,60"
    np.testing.assert_array_equal(raw_array(part), env.image[2, 10:50:3, 20:60:3])


@pytest.mark.parametrize(
    ("spec", "status", "message"),
    [
        ({"path": "broken.tif"}, 400, "broken.tif"),
        ({"path": "notes.txt"}, 400, "unknown extension"),
        ({"path": "stacks/two_channels.tif"}, 400, "has 2 channels"),
        ({"path": "stacks/two_channels.tif", "channel": 5}, 400, "channel"),
        ({"path": "missing.tif"}, 403, "does not exist"),
        ({"path": "stacks/balls.tif", "colour": 1}, 400, "unknown key"),
        ({"path": 3}, 400, "path"),
    ],
)
def test_images_the_readers_refuse(env: SimpleNamespace, spec: dict[str, Any], status: int, message: str) -> None:
    r = env.client.post("/api/images", json=spec)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_a_channel_of_a_4d_array_and_bad_slice_requests(env: SimpleNamespace) -> None:
    info = env.client.post("/api/images", json={"path": "stacks/two_channels.tif", "channel": 1}).json()
    np.testing.assert_array_equal(raw_array(env.client.get(f"/api/images/{info['id']}/slice/0")), env.image[::-1][0])
    bad = (({"region": "0,0,99,10"}, "region"), ({"region": "a,b"}, "region"), ({"max_side": 5}, "max_side"))
    for params, message in bad:
        r = env.client.get(f"/api/images/{info['id']}/slice/0", params=params)
        assert r.status_code == 400 and message in r.json()["error"]
    assert env.client.get(f"/api/images/{info['id']}/slice/99").status_code == 400
    assert env.client.get("/api/images/i-000000000000/slice/0").status_code == 404


def test_uploads_are_streamed_bounded_and_private(env: SimpleNamespace) -> None:
    buffer = io.BytesIO()
    import tifffile

    tifffile.imwrite(buffer, env.image[:2])
    r = env.client.post("/api/uploads", params={"name": "mine.tif"}, content=buffer.getvalue())
    assert r.status_code == 200 and r.json()["size"] == len(buffer.getvalue())
    info = env.client.post("/api/images", json={"source": "upload", "path": "mine.tif"}).json()
    assert info["shape"] == [2, *SHAPE[1:]]
    again = env.client.post("/api/uploads", params={"name": "mine.tif"}, content=b"II*\x00")
    assert again.status_code == 409 and "exists" in again.json()["error"]  # an upload is never replaced
    big = env.client.post("/api/uploads", params={"name": "big.tif"}, content=b"\0" * 400_000)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    uploads = {p.name for p in Path(env.config.sessions).rglob("uploads/*")}
    assert uploads == {"mine.tif"}  # nothing of the refused upload stayed, not even a partial file
    for name in ("../x.tif", "notes.txt", ".hidden.tif", "a/b.tif"):
        assert env.client.post("/api/uploads", params={"name": name}, content=b"12").status_code == 400
    with TestClient(create_app(env.config)) as other:  # another browser does not see this upload
        assert other.post("/api/images", json={"source": "upload", "path": "mine.tif"}).status_code == 403


# ---- a session ---------------------------------------------------------------------------------------------------


def test_click_box_stroke_undo_redo_and_the_labels_served(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c)
    state = c.get(f"/api/sessions/{sid}").json()
    assert state["objects"] == [] and state["revision"] == 0 and state["image"]["shape"] == list(SHAPE)
    first = edit(c, sid, op="new_object")["result"]
    after = edit(c, sid, op="add_point", id=first, z=4, y=CENTRES[0][0], x=CENTRES[0][1])
    assert after["objects"][0]["slices"] == [4] and after["can_undo"]
    plane = labels_of(c, sid, 4)
    assert dice(plane == first, env.labels[4] == 1) > 0.85 and not labels_of(c, sid, 3).any()
    second = edit(c, sid, op="new_object")["result"]
    edit(c, sid, op="set_box", id=second, z=4, box=[30, 44, 55, 70])
    edit(c, sid, op="add_stroke", id=second, z=3, points=[[42, 50], [42, 62]], width=3)
    assert dice(labels_of(c, sid, 4) == second, env.labels[4] == 2) > 0.8 and labels_of(c, sid, 3).any()
    undone = edit(c, sid, op="undo")
    assert not labels_of(c, sid, 3).any() and undone["can_redo"]
    edit(c, sid, op="redo")
    assert labels_of(c, sid, 3).any()
    edit(c, sid, op="paint", id=first, z=4, points=[[5, 5], [5, 15]], width=3)
    edit(c, sid, op="paint", id=first, z=4, points=[[5, 5], [5, 15]], width=3, erase=True)
    assert not (labels_of(c, sid, 4)[3:8, 3:18] == first).any()
    history = c.get(f"/api/sessions/{sid}").json()["undo"]
    assert [h["action"] for h in history][-3:] == ["add_stroke", "paint", "erase"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"op": "add_point", "id": 1, "z": 4, "y": 10, "x": 500}, "x: point coordinate 500 is outside the image"),
        ({"op": "add_point", "id": 1, "z": 40, "y": 10, "x": 10}, "z: expected a slice index"),
        ({"op": "set_box", "id": 1, "z": 4, "box": [10, 10, 10, 30]}, "zero area"),
        ({"op": "add_point", "id": 7, "z": 4, "y": 1, "x": 1}, "unknown object 7"),
        ({"op": "add_point", "id": 1, "z": 4}, "missing ['y', 'x']"),
        ({"op": "add_point", "id": 1, "z": 4, "y": 1, "x": 1, "colour": 2}, "unknown ['colour']"),
        ({"op": "explode"}, "op: expected one of"),
        ({"op": "paint", "id": 1, "z": 4, "points": "nope"}, "points"),
        ({"op": "set_mode", "mode": "fuzzy"}, "mode"),
    ],
)
def test_bad_edits_are_refused_and_change_nothing(env: SimpleNamespace, change: dict[str, Any], message: str) -> None:
    c = env.client
    sid = new_session(c)
    edit(c, sid, op="new_object")
    before = c.get(f"/api/sessions/{sid}").json()
    r = c.post(f"/api/sessions/{sid}/edit", json={**change, "revision": before["revision"]})
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert c.get(f"/api/sessions/{sid}").json() == before  # the server keeps running, the session is unchanged


def test_a_stale_revision_is_refused_not_lost_silently(env: SimpleNamespace) -> None:
    """Two tabs on one session: the second tab's edit on an old revision is refused with the current revision."""
    c = env.client
    sid = new_session(c)
    oid = edit(c, sid, op="new_object")["result"]
    seen = c.get(f"/api/sessions/{sid}").json()["revision"]
    edit(c, sid, op="add_point", id=oid, z=4, y=20, x=22)  # tab 1
    r = c.post(f"/api/sessions/{sid}/edit", json={"op": "undo", "revision": seen})  # tab 2, not refreshed
    assert r.status_code == 409 and "another tab" in r.json()["error"] and r.json()["revision"] == seen + 1
    r = c.post(f"/api/sessions/{sid}/propagate", json={"revision": seen})  # nor does it propagate what it showed
    assert r.status_code == 409
    assert c.get(f"/api/sessions/{sid}").json()["objects"][0]["slices"] == [4]


def test_propagation_job_equals_fmscope_segment(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c)
    prompts = []
    for y, x in CENTRES:
        oid = edit(c, sid, op="new_object")["result"]
        edit(c, sid, op="add_point", id=oid, z=4, y=y, x=x)
        prompts.append(ObjectPrompt(oid, positive=((4.0, float(y), float(x)),)))
    job = c.post(f"/api/sessions/{sid}/propagate", json={"enhance": None}).json()
    done = wait_job(c, job)
    assert done["state"] == "done" and 3 in done["result"]["slices"], done
    volume = np.stack([labels_of(c, sid, z) for z in range(SHAPE[0])])
    cli = segment_prompted(RandomForestPrompter(), env.image, prompts, stack=StackConfig(propagate=True))
    np.testing.assert_array_equal(volume, cli.labels)
    assert dice(volume == 1, env.labels == 1) > 0.8
    stats = c.get(f"/api/sessions/{sid}/stats/1").json()["slices"]
    assert [r["z"] for r in stats] == sorted({z for z in range(SHAPE[0]) if volume[z].any() and (volume[z] == 1).any()})
    assert any(r["key"] for r in stats) and {"area", "height", "width", "outlier"} <= set(stats[0])


def test_a_cancelled_propagation_keeps_nothing(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    c = env.client
    sid = new_session(c)
    oid = edit(c, sid, op="new_object")["result"]
    edit(c, sid, op="add_point", id=oid, z=4, y=20, x=22)
    before = c.get(f"/api/sessions/{sid}").json()
    from fmscope.app import jobs as jobs_module

    real = jobs_module.Job.progress
    monkeypatch.setattr(jobs_module.Job, "progress", lambda self, *a, **k: (self.cancel(), real(self, *a, **k)))
    done = wait_job(c, c.post(f"/api/sessions/{sid}/propagate", json={}).json())
    assert done["state"] == "cancelled"
    assert c.get(f"/api/sessions/{sid}").json() == before


def test_exports_and_ground_truth(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c)
    oid = edit(c, sid, op="new_object")["result"]
    for z in range(2, 7):
        edit(c, sid, op="add_point", id=oid, z=z, y=CENTRES[0][0], x=CENTRES[0][1])
    edit(c, sid, op="accept", id=oid)
    page = np.stack([labels_of(c, sid, z) for z in range(SHAPE[0])])
    for fmt in ("tif", "ome.zarr"):
        spec = {"what": "labels", "format": fmt, "accepted_only": True}
        out = c.post(f"/api/sessions/{sid}/export", json=spec).json()
        assert out["name"].endswith(f"_label.{fmt}")
        folder = next(Path(env.config.sessions).rglob(out["name"]))
        back = read_image(folder, lazy=False)
        np.testing.assert_array_equal(back.numpy(), page)  # the export is what the page showed
        assert back.meta.spacing == (2.0, 0.5, 0.5) and back.meta.unit == "micrometer"
        download = c.get(out["url"])
        assert download.status_code == 200 and len(download.content) > 100
        assert (folder.parent / f"{folder.name}.fmscope.json").exists()
    table = c.post(f"/api/sessions/{sid}/export", json={"what": "morphometry"}).json()
    rows = list(csv.DictReader(io.StringIO(c.get(table["url"]).text)))
    assert rows[0]["id"] == str(oid) and float(rows[0]["volume_physical"]) == pytest.approx(
        0.5 * float(rows[0]["volume_voxels"])
    )
    prompts = json.loads(c.get(c.post(f"/api/sessions/{sid}/export", json={"what": "prompts"}).json()["url"]).text)
    assert len(prompts["objects"][0]["positive"]) == 5
    record = json.loads(c.get(c.post(f"/api/sessions/{sid}/export", json={"what": "record"}).json()["url"]).text)
    assert record["command"] == "app" and record["parameters"]["objects"] == [oid]
    assert c.post(f"/api/sessions/{sid}/export", json={"what": "everything"}).status_code == 400
    names = {c.post(f"/api/sessions/{sid}/export", json={"what": "prompts"}).json()["name"] for _ in range(3)}
    assert len(names) == 3  # exports made in the same second do not collide
    assert c.get(f"/api/sessions/{sid}/labels/4", params={"max_side": 0}).status_code == 400
    scores = wait_job(c, c.post(f"/api/sessions/{sid}/compare", json={"path": "stacks/balls_labels.tif",
                                                                      "values": [1]}).json())  # fmt: skip
    assert scores["state"] == "done" and scores["result"]["dice"] > 0.8
    assert [r["z"] for r in scores["result"]["slices"]] == sorted({z for z in range(9) if page[z].any()
                                                                   or (env.labels[z] == 1).any()})  # fmt: skip


def test_backends_refused_with_the_reason(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c)
    r = c.post(f"/api/sessions/{sid}/backend", json={"method": "fm", "model_dir": "stacks"})
    assert r.status_code == 400 and "stacks" in r.json()["error"]  # not a model folder
    r = c.post(f"/api/sessions/{sid}/backend", json={"method": "fm", "model_dir": "../.."})
    assert r.status_code == 403
    (env.tmp / "ckpt" / "sam_vit_b_01ec64.pth").write_bytes(b"\0" * 1000)  # a truncated checkpoint
    r = c.post(f"/api/sessions/{sid}/backend", json={"method": "sam"})
    assert r.status_code == 400 and ("sam_vit_b_01ec64.pth" in r.json()["error"] or "pip install" in r.json()["error"])
    assert c.post(f"/api/sessions/{sid}/backend", json={"method": "cellpose"}).status_code == 400
    assert c.post(f"/api/sessions/{sid}/backend", json={"method": "rf"}).status_code == 200
    r = c.post(f"/api/sessions/{sid}/text", json={"phrase": "a ball"})
    assert r.status_code == 400 and "--grounding" in r.json()["error"]


def test_a_restarted_server_restores_the_session_and_its_history(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c)
    oid = edit(c, sid, op="new_object")["result"]
    edit(c, sid, op="add_point", id=oid, z=4, y=20, x=22)
    edit(c, sid, op="accept_slice", id=oid, z=4)
    before = c.get(f"/api/sessions/{sid}").json()
    planes = labels_of(c, sid, 4)
    with TestClient(create_app(env.config), cookies=dict(c.cookies)) as again:  # a new server process, same browser
        state = again.get(f"/api/sessions/{sid}").json()
        assert state["objects"] == before["objects"] and state["undo"] == before["undo"]
        np.testing.assert_array_equal(labels_of(again, sid, 4), planes)
        assert (
            again.post(f"/api/sessions/{sid}/edit", json={"op": "undo", "revision": state["revision"]}).json()[
                "objects"
            ][0]["accepted_slices"]
            == []
        )
        assert [s["id"] for s in again.get("/api/sessions").json()["sessions"]] == [sid]


def test_semantic_sessions_and_jobs_of_other_browsers(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c, mode="semantic")
    state = c.get(f"/api/sessions/{sid}").json()
    assert state["mode"] == "semantic"
    bright, dark = edit(c, sid, op="new_object")["result"], edit(c, sid, op="new_object")["result"]
    edit(c, sid, op="add_stroke", id=bright, z=4, points=[[20, 16], [20, 28]], width=3)
    edit(c, sid, op="add_stroke", id=dark, z=4, points=[[5, 5], [5, 70]], width=3)
    plane = labels_of(c, sid, 4)
    assert set(np.unique(plane)) == {bright, dark} and dice(plane == bright, env.labels[4] > 0) > 0.85
    job = c.post(f"/api/sessions/{sid}/propagate", json={}).json()
    with TestClient(create_app(env.config)) as other:  # another browser: none of this is reachable
        assert other.get(f"/api/sessions/{sid}").status_code == 404
        assert other.get(f"/api/jobs/{job['id']}").status_code == 404
        assert other.get("/api/sessions").json()["sessions"] == []
    assert wait_job(c, job)["state"] == "done"
    assert all(labels_of(c, sid, z).all() for z in range(SHAPE[0]))  # every pixel in a phase


def test_segment_everything_with_a_backend_that_has_an_automatic_mode(
    env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Automatic mode runs as a job and adds what it finds as objects (one undoable step); a backend without it is
    refused with the reason."""
    c = env.client
    sid = new_session(c)
    r = c.post(f"/api/sessions/{sid}/automatic", json={"z": 4})
    assert r.status_code == 400 and "no automatic mode" in r.json()["error"]

    class Components(RandomForestPrompter):
        name = "components"

        def automatic(self, embedding: Any, **options: Any) -> np.ndarray:
            from scipy import ndimage as ndi

            return np.asarray(ndi.label(embedding.features[..., 0] > 0.5)[0])

    from fmscope.app import workspace as workspace_module

    monkeypatch.setattr(workspace_module, "build_backend", lambda options, config: Components())
    assert c.post(f"/api/sessions/{sid}/backend", json={"method": "rf"}).status_code == 200
    done = wait_job(c, c.post(f"/api/sessions/{sid}/automatic", json={"z": 4}).json())
    assert done["state"] == "done" and len(done["result"]["objects"]) == 2, done
    plane = labels_of(c, sid, 4)
    for k, j in zip(done["result"]["objects"], (1, 2), strict=True):
        assert dice(plane == k, env.labels[4] == j) > 0.8
    stack = wait_job(c, c.post(f"/api/sessions/{sid}/automatic", json={"stack": True}).json())
    assert stack["state"] == "done" and len(stack["result"]["objects"]) == 2  # linked through the slices
    edit(c, sid, op="undo")
    assert len(c.get(f"/api/sessions/{sid}").json()["objects"]) == 2


# ---- train on accepted (issue 15) ------------------------------------------------------------------------------

TINY_ROUND = {"model": "unet-tiny", "epochs": 1, "steps_per_epoch": 2, "freeze_epochs": 0, "augment": False,
              "patch_size": [32, 32], "batch_size": 2}  # fmt: skip


def test_train_on_accepted_proposes_the_other_slices_as_one_undoable_step(env: SimpleNamespace) -> None:
    c = env.client
    sid = new_session(c)
    oid = edit(c, sid, op="new_object")["result"]
    r = c.post(f"/api/sessions/{sid}/train", json={"finetune": TINY_ROUND, "init": "scratch"})
    failed = wait_job(c, r.json())  # nothing accepted yet: the job says what to do
    assert failed["state"] == "failed" and "no accepted mask" in failed["error"]
    for z in (3, 5):
        edit(c, sid, op="add_point", id=oid, z=z, y=CENTRES[0][0], x=CENTRES[0][1])
        edit(c, sid, op="accept_slice", id=oid, z=z)
    before = c.get(f"/api/sessions/{sid}").json()
    accepted = {z: labels_of(c, sid, z) for z in (3, 5)}
    done = wait_job(c, c.post(f"/api/sessions/{sid}/train", json={"finetune": TINY_ROUND, "init": "scratch"}).json())
    assert done["state"] == "done", done
    result = done["result"]
    assert result["round"] == 1 and result["object"] == oid
    assert (result["trained_on"], result["validated_on"]) == ([3], [5])
    assert result["proposed"] == [z for z in range(SHAPE[0]) if z not in (3, 5)]
    assert "round-001" in Path(result["model_dir"]).parts and (Path(result["model_dir"]) / "task.json").is_file()
    after = c.get(f"/api/sessions/{sid}").json()
    assert after["revision"] == result["revision"] > before["revision"] and after["undo"][-1]["action"] == (
        "train_proposals"
    )
    assert all(np.array_equal(labels_of(c, sid, z), accepted[z]) for z in (3, 5))  # accepted slices stay as accepted
    edit(c, sid, op="undo")  # the proposals are one step
    assert [labels_of(c, sid, z).any() for z in range(SHAPE[0])] == [z in (3, 5) for z in range(SHAPE[0])]
    again = wait_job(c, c.post(f"/api/sessions/{sid}/train", json={"finetune": TINY_ROUND, "init": "scratch",
                                                                    "propose": False}).json())  # fmt: skip
    assert again["result"]["round"] == 2 and again["result"]["proposed"] == []


def test_train_on_accepted_refuses_bad_requests_and_a_cancel_keeps_nothing(
    env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = env.client
    sid = new_session(c)
    oid = edit(c, sid, op="new_object")["result"]
    edit(c, sid, op="add_point", id=oid, z=4, y=CENTRES[0][0], x=CENTRES[0][1])
    edit(c, sid, op="accept_slice", id=oid, z=4)
    for body, status, message in (
        ({"finetune": {"epoch": 2}}, 400, "unknown config key"),
        ({"finetune": [1]}, 400, "finetune: expected a mapping"),
        ({"init": "../secret"}, 403, "leaves the data folder"),
        ({"init": "no-such-model"}, 400, "neither a shipped model (lsm-unet-cpu)"),
        ({"lr": 1}, 400, "unknown key"),
        ({"init": ""}, 400, "init: expected a shipped model name"),
        ({"propose": "yes"}, 400, "propose: expected true or false"),
        ({"object": "1"}, 400, "object: expected an object id"),
        ({"finetune": {"task": "classify"}}, 400, "task: a round trains a segmenter"),
    ):
        r = c.post(f"/api/sessions/{sid}/train", json=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    before = c.get(f"/api/sessions/{sid}").json()
    from fmscope.app import jobs as jobs_module

    real = jobs_module.Job.progress
    monkeypatch.setattr(jobs_module.Job, "progress", lambda self, *a, **k: (self.cancel(), real(self, *a, **k)))
    done = wait_job(c, c.post(f"/api/sessions/{sid}/train", json={"finetune": TINY_ROUND, "init": "scratch"}).json())
    assert done["state"] == "cancelled"
    assert c.get(f"/api/sessions/{sid}").json() == before
    assert not list(env.config.sessions.glob(f"*/{sid}/rounds/round-*"))
