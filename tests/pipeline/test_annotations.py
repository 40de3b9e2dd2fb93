import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.core.fetch import SourceError, fetch
from pipeline.core.manifest import AnnotationError
from pipeline.stages.annotations.ave import (
    AVE_CATEGORIES,
    parse_annotations,
    parse_audioset_csv,
    read_split,
)
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations

GOOD = [
    "Church bell&RUhOCu3LNXM&good&0&10",
    "Church bell&-UhOCu3L_XM&good&6&8",
    "Bark&abcdefghijk&good&2&5",
    "Bark&abcdefghijk&good&0&0",
    "Bark&ZZZZZZZZZZZ&good&9&10",
]
AUDIOSET_CSV = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=3, num_segs=3, num_unique_labels=527, num_positive_labels=5
# YTID, start_seconds, end_seconds, positive_labels
-UhOCu3L_XM, 30.000, 40.000, "/m/09x0r,/t/dd00004"
RUhOCu3LNXM, 0.000, 10.000, "/m/0395lw"
xxxxxxxxxxx, 12.500, 22.500, "/m/05tny_"
"""


def write_set(root, lines=GOOD, splits=None, csv=AUDIOSET_CSV):
    """A small AVE-shaped input set: Annotations.txt, split txt files, an AudioSet CSV."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Annotations.txt").write_text("\n".join(lines) + "\n")
    splits = splits or {"train": [0, 2, 4], "val": [1], "test": [3]}
    for name, rows in splits.items():
        (root / f"{name}_order.txt").write_text("".join(f"{r}\n" for r in rows))
        (root / f"{name}_order_match.txt").write_text("".join(f"{r}\n" for r in rows))
    (root / "segments.csv").write_text(csv)
    return root


def config(root, data_dir, **kw):
    return AnnotationsConfig(
        data_dir=data_dir,
        ave_annotations=str(root / "Annotations.txt"),
        ave_splits=str(root),
        audioset_csv=[str(root / "segments.csv")],
        **kw,
    )


def test_small_set_manifest(tmp_path):
    root = write_set(tmp_path / "in")
    summary = run_annotations(config(root, tmp_path / "data"))
    m = pd.read_parquet(tmp_path / "data/manifest.parquet")
    assert list(m["youtube_id"]) == [
        "RUhOCu3LNXM",
        "-UhOCu3L_XM",
        "abcdefghijk",
        "abcdefghijk",
        "ZZZZZZZZZZZ",
    ]
    assert list(m["label"]) == [0, 0, 1, 1, 1]
    assert list(m["split"]) == ["train", "val", "train", "test", "train"]
    assert m.loc[1, "segment_labels"].tolist() == [2] * 6 + [0, 0] + [2, 2]
    assert m.loc[3, "segment_labels"].tolist() == [2] * 10  # empty event: all background
    assert m.loc[1, "clip_start"] == 30.0 and m.loc[1, "clip_end"] == 40.0
    assert pd.isna(m.loc[2, "clip_start"])
    classes = pd.read_parquet(tmp_path / "data/classes.parquet")
    assert classes["name"].tolist() == ["Church bell", "Bark", "background"]
    assert summary["duplicate_ids"] == 1 and summary["empty_event_rows"] == [3]
    assert summary["videos_with_offset"] == 2 and summary["videos_without_offset"] == 2
    assert summary["event_length_histogram"] == {0: 1, 1: 1, 2: 1, 3: 1, 10: 1}


def test_rerun_is_skipped_and_force_rebuilds(tmp_path):
    root = write_set(tmp_path / "in")
    cfg = config(root, tmp_path / "data")
    assert run_annotations(cfg)["skipped"] is False
    mtime = (tmp_path / "data/manifest.parquet").stat().st_mtime_ns
    assert run_annotations(cfg)["skipped"] is True
    assert (tmp_path / "data/manifest.parquet").stat().st_mtime_ns == mtime
    cfg.force = True
    assert run_annotations(cfg)["skipped"] is False
    # a changed input file is noticed without --force
    (root / "Annotations.txt").write_text(
        "\n".join(GOOD[:4] + ["Bark&ZZZZZZZZZZZ&good&8&10"]) + "\n"
    )
    cfg.force = False
    assert run_annotations(cfg)["skipped"] is False


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Bark&ZZZZZZZZZZZ&good&9", r"Annotations.txt:5: expected 5 '&'-separated fields"),
        ("Bark&ZZZZZZZZZZZ&good&9&10&x", r":5: expected 5"),
        ("Bark&ZZZZZZZZZZZ&good&9&4", r":5: start 9 is after end 4"),
        ("Bark&ZZZZZZZZZZZ&good&3&11", r":5: times 3..11 lie outside"),
        ("Bark&ZZZZZZZZZZZ&good&-1&4", r":5: times -1..4 lie outside"),
        ("Bark&ZZZZZZZZZZZ&good&a&4", r":5: start/end must be integer"),
        ("Bark&ZZZZZZZZZZ&good&3&4", r":5: malformed YouTube ID 'ZZZZZZZZZZ'"),
        ("Bark&ZZZZZ ZZZZZ&good&3&4", r":5: malformed YouTube ID"),
        ("Church bell&ZZZZZZZZZZZ&good&3&4", r":5: category 'Church bell' reappears"),
    ],
)
def test_bad_annotation_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "Annotations.txt"
    path.write_text("\n".join(GOOD[:4] + [line]) + "\n")
    with pytest.raises(AnnotationError, match=message):
        parse_annotations(path)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (
            {"train": [0, 2, 4], "val": [1, 2], "test": [3]},
            r"val_order.txt: row 2 is also in .*train_order.txt",
        ),
        ({"train": [0, 2], "val": [1], "test": [3]}, r"miss 1 of 5 rows, e.g. row 4"),
        (
            {"train": [0, 2, 4], "val": [1], "test": [3, 5]},
            r"test_order.txt: index 5 is past the end",
        ),
        ({"train": [0, 2, 4, 4], "val": [1], "test": [3]}, r"row 4 is listed 2 times"),
    ],
)
def test_bad_split_lists(tmp_path, splits, message):
    root = write_set(tmp_path / "in", splits=splits)
    with pytest.raises(AnnotationError, match=message):
        run_annotations(config(root, tmp_path / "data"))
    assert not (tmp_path / "data/manifest.parquet").exists()


def test_split_txt_with_garbage_names_line(tmp_path):
    path = tmp_path / "train_order.txt"
    path.write_text("1\n2\nthree\n")
    with pytest.raises(AnnotationError, match=r"train_order.txt:3: expected one integer"):
        read_split(path)


def test_split_h5_wrong_key(tmp_path):
    path = tmp_path / "train_order.h5"
    with h5py.File(path, "w") as f:
        f["avadataset"] = np.arange(3)
    with pytest.raises(AnnotationError, match="no dataset 'order'"):
        read_split(path)


def test_audioset_csv_quirks(tmp_path):
    path = tmp_path / "seg.csv"
    path.write_text(AUDIOSET_CSV)
    table = parse_audioset_csv(path)
    assert table["youtube_id"].tolist() == ["-UhOCu3L_XM", "RUhOCu3LNXM", "xxxxxxxxxxx"]
    assert table["start_seconds"].tolist() == [30.0, 0.0, 12.5]
    assert table["positive_labels"].tolist()[0] == "/m/09x0r,/t/dd00004"
    path.write_text(AUDIOSET_CSV + "broken\n")
    with pytest.raises(AnnotationError, match=r"seg.csv:7: expected 'YTID"):
        parse_audioset_csv(path)
    # read line by line (2 M rows), yet a binary or non-UTF-8 file is the one clear error
    path.write_bytes(AUDIOSET_CSV.encode() + b"abc\0def, 1, 11\n")
    with pytest.raises(AnnotationError, match=r"seg.csv: binary data \(a NUL byte at line 7"):
        parse_audioset_csv(path)
    path.write_bytes(AUDIOSET_CSV.encode() + "\u00e9t\u00e9, 1, 11\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"seg.csv: not UTF-8 text \(byte 0xe9 at line 7"):
        parse_audioset_csv(path)


def test_missing_local_file_is_clear(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        fetch(tmp_path / "nope.txt", tmp_path)


def test_fetch_url_verifies_checksum(tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "Annotations.txt").write_text("\n".join(GOOD) + "\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path / "srv")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/Annotations.txt"
        with pytest.raises(SourceError, match="does not match the expected"):
            fetch(url, tmp_path / "cache", sha256="0" * 64)
        assert not (tmp_path / "cache" / "Annotations.txt").exists()
        got = fetch(url, tmp_path / "cache")
        assert got.read_text().startswith("Church bell")
        with pytest.raises(SourceError, match="could not download"):
            fetch(url.replace("Annotations", "missing"), tmp_path / "cache")
    finally:
        server.shutdown()


def test_real_ave_file_with_h5_and_txt_splits(shared, tmp_path):
    for splits in (shared / "ave" / "release", shared / "ave" / "splits"):
        cfg = AnnotationsConfig(
            data_dir=tmp_path / splits.name,
            ave_annotations=str(shared / "ave" / "Annotations.txt"),
            ave_splits=str(splits),
            audioset_csv=["none"],
        )
        summary = run_annotations(cfg)
        assert summary["rows"] == 4143 and summary["unique_videos"] == 4097
        assert summary["duplicate_ids"] == 45 and summary["empty_event_rows"] == [26]
        assert summary["split_rows"] == {"train": 3339, "val": 402, "test": 402}
        assert summary["match_split_rows"] == {"train": 3339, "val": 402, "test": 402}
        assert (
            summary["is_published_ave_classes"] and summary["annotations_sha256_matches_published"]
        )
        assert summary["event_length_histogram"][10] == 2750
    h5 = pd.read_parquet(tmp_path / "release/manifest.parquet")
    txt = pd.read_parquet(tmp_path / "splits/manifest.parquet")
    pd.testing.assert_frame_equal(h5, txt)
    test = h5[h5["split"] == "test"]
    labels = np.stack(test["segment_labels"].to_numpy())
    assert labels.size == 4020 and int((labels == 28).sum()) == 715
    lengths = (h5["end"] - h5["start"])[h5["match_split"] == "test"]
    assert lengths.between(2, 9).all()
    assert pd.read_parquet(tmp_path / "release/classes.parquet")["name"].tolist() == [
        *AVE_CATEGORIES,
        "background",
    ]


def test_cli_prints_summary_and_errors(tmp_path):
    root = write_set(tmp_path / "in")
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "annotations",
        "--data-dir",
        str(tmp_path / "data"),
        "--ave-annotations",
        str(root / "Annotations.txt"),
        "--ave-splits",
        str(root),
        "--audioset-csv",
        str(root / "segments.csv"),
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert "rows: 5   unique videos: 4" in out and "AudioSet coverage: 2 videos" in out
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert "up to date" in out
    (root / "Annotations.txt").write_text("Bark&short&good&0&1\n")
    bad = subprocess.run(args, capture_output=True, text=True)
    assert bad.returncode == 1 and "Annotations.txt:1: malformed YouTube ID 'short'" in bad.stderr
