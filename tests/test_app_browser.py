"""The web app in a real headless browser, used as a person would: open the ISBI stack from the data folder, click
two mitochondria, propagate, erase a stroke, undo, redo, export, compare the export with what the page showed; a
reload restores the session; two browsers see only their own sessions; two tabs on one session lose nothing; a
server killed during a propagation keeps everything made before.

Debian's ``chromium-headless-shell`` (``make test`` installs it) is driven by the pip ``playwright`` package with
``executable_path`` (``playwright install`` is never run). Set ``FMSCOPE_DOCS_SHOTS=1`` to refresh the screenshots in
``docs/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")

from fmscope.interactive.propagate import interior_point  # noqa: E402
from fmscope.io import read_image  # noqa: E402
from fmscope.metrics import dice  # noqa: E402

pytestmark = pytest.mark.browser

BROWSERS = ("/usr/bin/chromium-headless-shell", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
DOCS = Path(__file__).resolve().parents[1] / "docs"
ISBI = "isbi2012_em_membranes"


def _browser_path() -> str:
    env = os.environ.get("FMSCOPE_CHROMIUM")
    for path in (env, *BROWSERS):
        if path and Path(path).is_file():
            return path
    pytest.skip("no headless Chromium (install Debian's chromium-headless-shell; make test does it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``fmscope app`` in a subprocess (as a user starts it), restartable on the same port and folders."""

    def __init__(self, data_root: Path, sessions: Path) -> None:
        self.data_root, self.sessions, self.port = data_root, sessions, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "fmscope.cli.main", "app", "--data-root", str(self.data_root), "--sessions",
               str(self.sessions), "--port", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(300):
            try:
                with urllib.request.urlopen(self.url + "api/info", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"fmscope app exited: {self.proc.stderr.read().decode()}") from None  # type: ignore[union-attr]
                time.sleep(0.1)
        raise RuntimeError("fmscope app did not start within 30 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _browser_path()
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(shared_data: Path) -> Iterator[Server]:
    sessions = Path(tempfile.mkdtemp(prefix="fmscope-browser-"))
    s = Server(shared_data, sessions)
    s.start()
    yield s
    s.stop()
    shutil.rmtree(sessions, ignore_errors=True)


@pytest.fixture(scope="module")
def mitochondria(shared_data: Path) -> dict[str, Any]:
    """The two largest mitochondria cut by slice 15 (Cardona labels): their interior points, their boxes on slice 15
    (4 pixels wider than the object) and their 3D masks."""
    mito = read_image(shared_data / ISBI / "cardona2010_multiclass" / "mitochondria.tif").numpy() > 0
    objects, _ = ndi.label(mito)
    ids, sizes = np.unique(objects[15][objects[15] > 0], return_counts=True)
    chosen = ids[np.argsort(-sizes)][:2]
    boxes = []
    for k in chosen:
        ys, xs = np.nonzero(objects[15] == k)
        boxes.append((max(0, ys.min() - 4), max(0, xs.min() - 4), min(512, ys.max() + 5), min(512, xs.max() + 5)))
    return {"points": [interior_point(objects[15] == k) for k in chosen], "boxes": boxes,
            "truth": [objects == k for k in chosen]}  # fmt: skip


# ---- the page, as a user drives it -----------------------------------------------------------------------------


def _page(context: Any, server: Server) -> Any:
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page


def _data(page: Any, key: str) -> str:
    return str(page.evaluate(f"() => document.body.dataset.{key} || ''"))


def _settled(page: Any, timeout: float = 60_000) -> None:
    """No edit is pending (a first click makes two: the object, then the point), no job runs, and the labels on
    screen are those of the session's current revision."""
    page.wait_for_function(
        "() => { const d = document.body.dataset; return (d.pending || '0') === '0' && d.busy === '0'"
        " && d.labelsRevision === d.revision && d.labelsZ === d.z; }",
        timeout=timeout,
    )


def _open_isbi(page: Any) -> None:
    page.click(f"#files li[data-path='{ISBI}'] .name")
    page.click(f"#files li[data-path='{ISBI}/raw.tif'] .name")
    page.wait_for_selector("body[data-slice-z]")


def _new_session(page: Any) -> str:
    page.click("#new-session")
    page.wait_for_function("() => document.body.dataset.session !== ''", timeout=60_000)
    _settled(page)
    return _data(page, "session")


def _go_to(page: Any, z: int) -> None:
    page.fill("#z", str(z))
    page.dispatch_event("#z", "input")
    page.wait_for_function(f"() => document.body.dataset.labelsZ === '{z}' && document.body.dataset.sliceZ === '{z}'")


def _screen(page: Any, y: float, x: float) -> tuple[float, float]:
    box = page.locator("#canvas-prompts").bounding_box()
    sx, sy = page.evaluate(f"() => window.fmscope.viewer.toScreen({y + 0.5}, {x + 0.5})")
    return box["x"] + sx, box["y"] + sy


def _click(page: Any, y: float, x: float) -> None:
    revision = int(_data(page, "revision") or 0)
    page.mouse.click(*_screen(page, y, x))
    page.wait_for_function(f"() => Number(document.body.dataset.revision) > {revision}", timeout=60_000)
    _settled(page)


def _drag(page: Any, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
    """Press at image point ``start``, move to ``end``, release (a box, a stroke)."""
    revision = int(_data(page, "revision") or 0)
    page.mouse.move(*_screen(page, *start))
    page.mouse.down()
    for t in np.linspace(0, 1, steps):
        page.mouse.move(*_screen(page, start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
    page.mouse.up()
    page.wait_for_function(f"() => Number(document.body.dataset.revision) > {revision}", timeout=60_000)
    _settled(page)


def _shown(page: Any) -> np.ndarray:
    """The object ids the page draws on the current slice, read back from the overlay canvas pixels."""
    result = page.evaluate(
        """async () => {
          const { colour } = await import('/static/js/render.js');
          const v = window.fmscope.viewer; const c = v.offLabels;
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const ids = window.fmscope.app.session.objects.map((o) => o.id);
          const colours = ids.map((id) => colour(id));
          const out = new Array(c.width * c.height).fill(0);
          for (let i = 0; i < out.length; i++) {
            if (px[4 * i + 3] === 0) continue;
            let best = -1, gap = 1e9;  // the canvas keeps premultiplied alpha: read colours back to the nearest
            colours.forEach((rgb, k) => {
              const d = rgb.reduce((sum, v, j) => sum + Math.abs(v - px[4 * i + j]), 0);
              if (d < gap) { gap = d; best = ids[k]; }
            });
            out[i] = gap <= 24 ? best : -1;
          }
          return { w: c.width, h: c.height, ids: out };
        }"""
    )
    return np.array(result["ids"], np.int64).reshape(result["h"], result["w"])


def _shot(page: Any, name: str, selector: str | None = None) -> None:
    if os.environ.get("FMSCOPE_DOCS_SHOTS") != "1":
        return
    from PIL import Image

    DOCS.mkdir(exist_ok=True)
    raw = DOCS / f"{name}.raw.png"
    (page.locator(selector) if selector else page).screenshot(path=str(raw))
    img = Image.open(raw).convert("RGB")
    img.thumbnail((720, 720))
    big = img.width * img.height > 200_000  # the EM view: fewer colours keep it small; panels stay exact
    (img.quantize(colors=48) if big else img).save(DOCS / f"{name}.png", optimize=True)
    raw.unlink()


def _export(page: Any, what: str) -> str:
    before = page.locator(f"#exports li[data-export='{what}']").count()
    page.click({"labels": "#ex-labels", "prompts": "#ex-prompts", "morphometry": "#ex-morpho"}[what])
    page.wait_for_function(f"() => document.querySelectorAll(\"#exports li[data-export='{what}']\").length > {before}")
    return str(page.locator(f"#exports li[data-export='{what}'] a").first.text_content())


def _exported(server: Server, name: str) -> Path:
    return next(server.sessions.rglob(name))


# ---- the tests -------------------------------------------------------------------------------------------------


def test_segment_two_mitochondria_through_the_isbi_stack(
    browser: Any, server: Server, mitochondria: dict[str, Any], shared_data: Path, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = _page(context, server)
    _open_isbi(page)
    sid = _new_session(page)
    _go_to(page, 15)
    page.click("#tools [data-tool='box']")
    for k, (y0, x0, y1, x1) in enumerate(mitochondria["boxes"]):
        if k:
            page.click("#new-object")
            page.wait_for_function(f"() => document.body.dataset.objects === '{k + 1}'")
        _drag(page, (y0 - 0.5, x0 - 0.5), (y1 - 0.5, x1 - 0.5))  # corners are pixel edges
    page.click("#tools [data-tool='point']")
    for k, (y, x) in enumerate(mitochondria["points"], start=1):
        page.click(f"#objects li[data-object='{k}'] .name")
        _click(page, y, x)  # and a click inside
    page.click("#propagate-all")
    page.wait_for_function("() => document.body.dataset.job === 'done'", timeout=600_000)
    _settled(page)
    assert page.errors == []  # type: ignore[attr-defined]
    _shot(page, "app_isbi_propagated", "#view")

    # the propagation made through the page is the one `fmscope segment` makes from the same prompts
    propagated = _export(page, "labels")
    prompts = _export(page, "prompts")
    app_labels = read_image(_exported(server, propagated)).numpy()
    cli_out = tmp_path / "cli.tif"
    code = subprocess.run([sys.executable, "-m", "fmscope.cli.main", "segment", str(shared_data / ISBI / "raw.tif"),
                           "-o", str(cli_out), "--method", "rf", "--prompts", str(_exported(server, prompts)),
                           "--propagate"], capture_output=True, text=True)  # fmt: skip
    assert code.returncode == 0, code.stderr
    cli_labels = read_image(cli_out).numpy()
    np.testing.assert_array_equal(app_labels, cli_labels)
    scores = [dice(app_labels == k, t) for k, t in zip((1, 2), mitochondria["truth"], strict=True)]
    assert min(scores) > 0.3, scores
    print(f"\nISBI mitochondria through the app and through fmscope segment (equal labels): Dice {scores}")

    # erase a stroke on one slice, undo, redo (on the propagated slice where object 1 is largest)
    areas = (app_labels == 1).sum(axis=(1, 2))
    areas[15] = 0
    erase_z = int(np.argmax(areas))
    _go_to(page, erase_z)
    before = _shown(page)
    ys, xs = np.nonzero(before == 1)
    assert ys.size > 50
    page.click("#objects li[data-object='1'] .name")
    page.click("#tools [data-tool='erase']")
    page.fill("#brush", "6")
    page.dispatch_event("#brush", "change")
    y, x0, x1 = int(np.median(ys)), int(xs.min()) - 3, int(xs.max()) + 3
    revision = int(_data(page, "revision"))
    _drag(page, (y, x0), (y, x1), steps=12)
    erased = _shown(page)
    assert (erased == 1).sum() < (before == 1).sum() and not (erased[y, xs.min() : xs.max()] == 1).any()
    page.keyboard.press("Control+z")
    page.wait_for_function(f"() => Number(document.body.dataset.revision) > {revision + 1}")
    _settled(page)
    np.testing.assert_array_equal(_shown(page), before)
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function(f"() => Number(document.body.dataset.revision) > {revision + 2}")
    _settled(page)
    np.testing.assert_array_equal(_shown(page), erased)

    # a slice painted far too wide is marked in the per-slice plot; a click on the mark goes to that slice; undo
    wrong = int(np.flatnonzero((app_labels == 1).sum(axis=(1, 2)))[1])
    _go_to(page, wrong)
    page.click("#tools [data-tool='paint']")
    page.fill("#brush", "40")
    page.dispatch_event("#brush", "change")
    ys, xs = np.nonzero(app_labels[wrong] == 1)
    _drag(page, (float(ys.mean()), float(xs.max())), (float(ys.mean()), float(xs.max()) + 120))  # a slip of the hand
    page.wait_for_function(f"() => document.querySelector('#plot').dataset.outliers.split(',').includes('{wrong}')")
    _go_to(page, 15)
    _shot(page, "app_slice_plot", "#panel-stack")
    page.click(f"#plot circle.outlier[data-z='{wrong}']")
    page.wait_for_function(f"() => document.body.dataset.z === '{wrong}'")
    _settled(page)
    page.keyboard.press("Control+z")
    page.wait_for_function("() => document.querySelector('#plot').dataset.outliers === ''")
    _settled(page)

    # the exported TIFF is what the page showed, slice by slice
    name = _export(page, "labels")
    _shot(page, "app_export_panel", "#panel-export")
    exported = read_image(_exported(server, name)).numpy()
    for z in sorted({erase_z, 15, *np.flatnonzero(exported.any(axis=(1, 2)))[[0, -1]]}):
        _go_to(page, int(z))
        np.testing.assert_array_equal(_shown(page), exported[z])

    # a reload restores the session, its masks and its undo history
    revision = _data(page, "revision")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function(f"() => document.body.dataset.session === '{sid}'")
    _settled(page)
    assert _data(page, "revision") == revision and page.locator("#undo").is_enabled()
    np.testing.assert_array_equal(_shown(page), exported[int(_data(page, "z"))])
    context.close()


def test_two_browsers_see_only_their_own_sessions(browser: Any, server: Server) -> None:
    first, second = browser.new_context(), browser.new_context()
    a = _page(first, server)
    _open_isbi(a)
    sid = _new_session(a)
    b = _page(second, server)
    b.wait_for_function("() => document.querySelector('#sessions') !== null")
    assert b.locator(f"#sessions li[data-session='{sid}']").count() == 0
    status = b.evaluate(f"async () => (await fetch('/api/sessions/{sid}')).status")
    assert status == 404
    assert a.locator(f"#sessions li[data-session='{sid}']").count() == 1
    first.close()
    second.close()


def test_two_tabs_on_one_session_lose_nothing(browser: Any, server: Server, mitochondria: dict[str, Any]) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    one = _page(context, server)
    _open_isbi(one)
    sid = _new_session(one)
    _go_to(one, 15)
    two = _page(context, server)  # same browser: opens the same session (the last one used)
    two.wait_for_function(f"() => document.body.dataset.session === '{sid}'")
    _go_to(two, 15)
    y0, x0, y1, x1 = mitochondria["boxes"][0]
    one.click("#tools [data-tool='box']")
    _drag(one, (y0 - 0.5, x0 - 0.5), (y1 - 0.5, x1 - 0.5))  # tab one edits
    revision = int(_data(one, "revision"))
    two.click("#new-object")  # tab two, which may not have seen tab one's edit yet
    two.wait_for_function(
        f"() => /another tab/.test(document.body.dataset.error) || Number(document.body.dataset.revision) > {revision}"
    )
    two.wait_for_function(f"() => Number(document.body.dataset.revision) >= {revision}")
    _settled(two)
    # either tab two was refused with a message and refreshed, or it had been refreshed in time and its new object
    # came after tab one's: in both cases tab one's object is there and tab two shows it
    assert (_shown(two) == 1).any()
    assert "another tab" in _data(two, "error") or _data(two, "objects") == "2"
    context.close()


def test_bad_input_is_shown_and_a_killed_server_keeps_the_session(
    browser: Any, shared_data: Path, tmp_path: Path, mitochondria: dict[str, Any]
) -> None:
    root = tmp_path / "data" / ISBI
    root.mkdir(parents=True)
    shutil.copy(shared_data / ISBI / "raw.tif", root / "raw.tif")  # a private copy: this data root gets a bad file
    (root / "broken.tif").write_bytes(b"II*\x00 not a TIFF")
    s = Server(tmp_path / "data", tmp_path / "sessions")
    s.start()
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 820})
        page = _page(context, s)
        page.click(f"#files li[data-path='{ISBI}'] .name")
        page.click(f"#files li[data-path='{ISBI}/broken.tif'] .name")  # the readers refuse it: a message
        page.wait_for_function("() => /broken.tif/.test(document.body.dataset.error)")
        page.click(f"#files li[data-path='{ISBI}/raw.tif'] .name")
        page.wait_for_selector("body[data-slice-z]")
        sid = _new_session(page)
        _go_to(page, 15)
        y, x = mitochondria["points"][1]
        _click(page, y, x)
        page.mouse.click(*_screen(page, 100, -20))  # left of the image, on the canvas
        page.wait_for_function("() => /outside the image/.test(document.body.dataset.error)")
        page.click("#tools [data-tool='box']")
        page.mouse.click(*_screen(page, 100, 100))  # a box of zero area
        page.wait_for_function("() => /box/.test(document.body.dataset.error)")
        kept = _shown(page)
        page.click("#propagate-all")
        page.wait_for_function("() => document.body.dataset.job === 'running'")
        time.sleep(1.0)
        s.kill()  # the server dies during the propagation
        s.start()
        page.reload()
        page.wait_for_function(f"() => document.body.dataset.session === '{sid}'", timeout=60_000)
        _settled(page)
        np.testing.assert_array_equal(_shown(page), kept)  # everything made before the kill is there
        assert page.locator("#undo").is_enabled()
        context.close()
    finally:
        s.stop()


def test_train_on_accepted_cancel_then_a_round_of_proposals(
    browser: Any, server: Server, mitochondria: dict[str, Any]
) -> None:
    """Issue 15: accept one slice, start "Train on accepted" and cancel it (nothing kept), start it again and let it
    propose the other slices (one undoable step, shown on the page as the server has it)."""
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = _page(context, server)
    _open_isbi(page)
    _new_session(page)
    _go_to(page, 15)
    assert page.locator("#train").is_disabled()  # nothing accepted yet
    y0, x0, y1, x1 = mitochondria["boxes"][0]
    page.click("#tools [data-tool='box']")
    _drag(page, (y0 - 0.5, x0 - 0.5), (y1 - 0.5, x1 - 0.5))
    revision = int(_data(page, "revision"))
    page.click("#accept-slice")
    page.wait_for_function(f"() => Number(document.body.dataset.revision) > {revision}")
    _settled(page)
    assert page.locator("#train-init").input_value() == "lsm-unet-cpu"  # the shipped backbone by default
    page.fill("#train-epochs", "1")
    revision = _data(page, "revision")
    page.click("#train")
    page.wait_for_function("() => /training/.test(document.querySelector('#job-label').textContent)", timeout=60_000)
    page.click("#job-cancel")
    page.wait_for_function("() => document.body.dataset.job === 'cancelled'", timeout=120_000)
    assert "cancelled" in _data(page, "error") and _data(page, "revision") == revision
    page.click("#train")
    page.wait_for_function("() => document.body.dataset.job === 'done'", timeout=600_000)
    _settled(page)
    assert page.errors == []  # type: ignore[attr-defined]
    assert "round 1: trained on slice(s) 15" in page.locator("#train-result").text_content()
    assert int(_data(page, "revision")) > int(revision)
    assert page.evaluate("() => window.fmscope.app.session.undo.at(-1).action") == "train_proposals"
    _go_to(page, 14)  # a proposed slice: the page shows what the server holds
    served = page.evaluate(
        "async () => { const r = await fetch(`/api/sessions/${window.fmscope.app.sid}/labels/14`);"
        " const kind = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array }[r.headers.get('x-dtype')];"
        " return Array.from(new kind(await r.arrayBuffer())); }"
    )
    shown = _shown(page)
    np.testing.assert_array_equal(shown, np.array(served).reshape(shown.shape))
    proposed = shown == 1
    print(
        f"\ntrain on accepted (1 epoch from lsm-unet-cpu): slice 14 proposal Dice vs the Cardona object "
        f"{dice(proposed, mitochondria['truth'][0][14]):.3f}, {int(proposed.sum())} px"
    )
    context.close()
