"""Manifests: folder + captions.json, CSV, JSON, missing captions/files, save round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fmscope.data import Manifest, ManifestEntry, load_corpus, load_manifest, save_manifest
from fmscope.errors import FileFormatError, InvalidInputError, OutputExistsError
from fmscope.io import read_image, write_image


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "vols"
    d.mkdir()
    for i, name in enumerate(["a.tif", "b.nii.gz", "c.h5"]):
        write_image(d / name, np.full((4, 5, 6), i, dtype=np.uint16))
    (d / "captions.json").write_text(json.dumps({"a.tif": "cap a", "b.nii.gz": "cap b", "c.h5": "cap c"}))
    (d / "notes.txt").write_text("not a volume")
    return d


def test_real_lsm_pretrain_folder(shared_data: Path) -> None:
    folder = shared_data / "lsm_selma3d_wu_patches" / "pretrain"
    m = load_manifest(folder)
    assert len(m) == 10
    assert all(e.caption and len(e.caption) > 50 for e in m.entries)
    assert m.entries[0].source == "01_aa1-po-c-r45"
    assert len(set(m.sources)) == 10
    assert read_image(m.entries[0].path).meta.shape == (96, 96, 96)
    assert Path(m.root) == folder.resolve()


def test_folder_with_captions(folder: Path) -> None:
    m = load_manifest(folder)
    assert [Path(e.path).name for e in m.entries] == ["a.tif", "b.nii.gz", "c.h5"]
    assert [e.caption for e in m.entries] == ["cap a", "cap b", "cap c"]
    assert [e.source for e in m.entries] == ["a", "b", "c"]
    m2 = load_manifest(folder, sources={"a.tif": "brain1", "b.nii.gz": "brain1"})
    assert m2.sources == ("brain1", "c")


def test_missing_caption_file_and_entries(folder: Path) -> None:
    (folder / "captions.json").unlink()
    with pytest.raises(InvalidInputError, match="captions.json"):
        load_manifest(folder)
    m = load_manifest(folder, allow_missing_captions=True)
    assert all(e.caption is None for e in m.entries)
    (folder / "captions.json").write_text(json.dumps({"a.tif": "cap a"}))
    with pytest.raises(InvalidInputError, match=r"missing for 2.*b\.nii\.gz.*c\.h5"):
        load_manifest(folder)
    m = load_manifest(folder, allow_missing_captions=True)
    assert [e.caption for e in m.entries] == ["cap a", None, None]
    m = load_manifest(folder, captions={"a.tif": "x", "b.nii.gz": "y", "c.h5": "z"})
    assert [e.caption for e in m.entries] == ["x", "y", "z"]


def test_csv_and_json(folder: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "m.csv"
    csv_path.write_text('path,caption,source\nvols/a.tif,cap a,s1\nvols/c.h5,"c, with comma",s2\n')
    m = load_manifest(csv_path)
    assert [e.source for e in m.entries] == ["s1", "s2"]
    assert m.entries[1].caption == "c, with comma"
    assert Path(m.entries[0].path) == (folder / "a.tif").resolve()
    json_path = tmp_path / "m.json"
    json_path.write_text(json.dumps([{"path": "vols/b.nii.gz", "caption": "cap", "source": "s", "dataset": None}]))
    assert load_manifest(json_path).entries[0] == ManifestEntry(str((folder / "b.nii.gz").resolve()), "cap", "s")


@pytest.mark.parametrize(
    ("name", "text", "error", "match"),
    [
        ("m.csv", "path,caption,source\n", InvalidInputError, "at least one volume"),
        ("m.csv", "path,caption,source\nvols/zz.tif,c,s\n", FileFormatError, "do not exist.*zz.tif"),
        ("m.csv", "file,caption\nvols/a.tif,c\n", FileFormatError, "columns"),
        ("m.csv", "path,caption,source\nvols/a.tif,,s\n", InvalidInputError, "a.tif"),
        ("m.json", '{"a.tif": "c"}', FileFormatError, "JSON list"),
        ("m.json", '[{"path": "vols/a.tif", "bogus": 1}]', FileFormatError, "bogus"),
        ("m.json", "[not json", FileFormatError, "JSON"),
        ("m.yaml", "x", FileFormatError, "folder, a .csv or a .json"),
    ],
)
def test_bad_manifests(folder: Path, tmp_path: Path, name: str, text: str, error: type, match: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(error, match=match):
        load_manifest(p)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="at least one volume"):
        load_manifest(tmp_path, allow_missing_captions=True)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_save_roundtrip(folder: Path, tmp_path: Path, suffix: str) -> None:
    m = load_manifest(folder)
    out = tmp_path / f"saved{suffix}"
    save_manifest(m, out)
    again = load_manifest(out)
    assert again.entries == m.entries
    with pytest.raises(OutputExistsError):
        save_manifest(m, out)
    save_manifest(m, out, overwrite=True)
    with pytest.raises(InvalidInputError, match="empty"):
        save_manifest(Manifest((), str(tmp_path)), tmp_path / "e.csv")
    with pytest.raises(InvalidInputError, match=".csv or .json"):
        save_manifest(m, tmp_path / "m.txt")


def test_relative_folder_path_from_another_working_directory(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a relative folder path was joined onto itself (``a/b/../a/b/x.nii.gz``)."""
    folder = shared_data / "lsm_selma3d_wu_patches" / "pretrain"
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(folder, tmp_path)
    manifest = load_manifest(rel)
    assert len(manifest.entries) == 10
    assert all(Path(e.path).is_file() and Path(e.path).is_absolute() for e in manifest.entries)


def test_captions_for_files_that_do_not_exist_are_refused(folder: Path) -> None:
    (folder / "captions.json").write_text(json.dumps({"a.tif": "x", "b.nii.gz": "y", "c.h5": "z", "gone.tif": "w"}))
    with pytest.raises(InvalidInputError, match=r"gone\.tif"):
        load_manifest(folder)


def test_corpus_of_several_sources_mixes_captioned_and_uncaptioned(folder: Path, tmp_path: Path) -> None:
    bare = tmp_path / "em"
    bare.mkdir()
    write_image(bare / "stack.tif", np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6))
    with pytest.raises(InvalidInputError, match="captions.json"):
        load_corpus([folder, bare])
    corpus = load_corpus([folder, str(bare)], allow_missing_captions=True)
    assert [Path(e.path).name for e in corpus.entries] == ["a.tif", "b.nii.gz", "c.h5", "stack.tif"]
    assert [e.caption for e in corpus.entries] == ["cap a", "cap b", "cap c", None]
    assert load_corpus(str(folder)).entries == load_manifest(folder).entries  # one path: the same as a manifest
    manifest = tmp_path / "again.csv"
    manifest.write_text(f"path,caption\n{folder / 'a.tif'},cap a\n")
    with pytest.raises(InvalidInputError, match=r"a\.tif.*listed by both"):
        load_corpus([folder, manifest])
    with pytest.raises(InvalidInputError, match="at least one"):
        load_corpus([])
    twin = tmp_path / "twin"
    twin.mkdir()
    write_image(twin / "stack.tif", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(InvalidInputError, match="source id 'stack' occurs in both"):
        load_corpus([bare, twin], allow_missing_captions=True)


def test_content_digest_follows_the_voxels_not_the_file(folder: Path, tmp_path: Path) -> None:
    from fmscope.data.digest import array_digest, corpus_record, file_digest, overlaps

    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    write_image(tmp_path / "x.tif", data)
    write_image(tmp_path / "x.nii.gz", data)
    write_image(tmp_path / "x.zarr", data)
    digests = {file_digest(tmp_path / n) for n in ("x.tif", "x.nii.gz", "x.zarr")}
    assert digests == {array_digest(data)} == {array_digest(data[None])}  # format and a singleton axis do not count
    changed = data.copy()
    changed[0, 0, 0] += 1
    assert array_digest(changed) != array_digest(data)
    assert array_digest(data.astype(np.float32)) != array_digest(data)
    assert array_digest(data.astype(">u2")) == array_digest(data)  # byte order is not content
    assert array_digest(data.reshape(5, 4, 6)) != array_digest(data)
    record = corpus_record(load_manifest(folder))
    assert [r["captioned"] for r in record] == [True, True, True] and record[0]["shape"] == (4, 5, 6)
    found = overlaps(record, {record[1]["digest"]: "test unit b"})
    assert found == [(str((folder / "b.nii.gz").resolve()), "test unit b")]
