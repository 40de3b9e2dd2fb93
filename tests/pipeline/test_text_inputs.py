"""Every text input (annotations, split lists, AudioSet / VGGSound / table CSVs, class labels)
reads the same with a UTF-8 byte-order mark, Windows line ends and trailing blank lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.manifest import AnnotationError, load_classes, load_manifest
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from tests.pipeline.test_annotations import AUDIOSET_CSV, GOOD, config, write_set

BOM = "\ufeff"


def _dirty(path: Path, crlf: bool = False, blank: str = "\n\n  \n") -> None:
    """Rewrite ``path`` as an editor on Windows might: BOM first, trailing blank lines."""
    text = path.read_text()
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_text(BOM + text + blank, newline="")


def _manifest_and_classes(data: Path) -> tuple[pd.DataFrame, list[str]]:
    return load_manifest(data), load_classes(data)


@pytest.mark.parametrize("crlf", [False, True])
def test_ave_inputs_with_bom_and_trailing_blank_lines(tmp_path: Path, crlf: bool) -> None:
    clean = write_set(tmp_path / "clean")
    run_annotations(config(clean, tmp_path / "clean_data"))
    dirty = write_set(tmp_path / "dirty")
    for path in [dirty / "Annotations.txt", dirty / "segments.csv", *dirty.glob("*_order*.txt")]:
        _dirty(path, crlf)
    summary = run_annotations(config(dirty, tmp_path / "dirty_data"))
    want_m, want_c = _manifest_and_classes(tmp_path / "clean_data")
    got_m, got_c = _manifest_and_classes(tmp_path / "dirty_data")
    assert got_c == want_c == ["Church bell", "Bark", "background"]
    cols = ["youtube_id", "category", "label", "split", "start", "end", "clip_start", "clip_end"]
    pd.testing.assert_frame_equal(got_m[cols], want_m[cols])
    assert summary["rows"] == len(GOOD) and summary["videos_with_offset"] == 2


def test_blank_line_inside_the_annotation_file_is_still_an_error(tmp_path: Path) -> None:
    root = write_set(tmp_path / "in", lines=[*GOOD[:2], "", *GOOD[2:]])
    with pytest.raises(AnnotationError, match=r"Annotations.txt:3: empty line"):
        run_annotations(config(root, tmp_path / "data"))


def test_audioset_csv_bom_before_the_comment_header(tmp_path: Path) -> None:
    root = write_set(tmp_path / "in", csv=BOM + AUDIOSET_CSV + "\n\n")
    summary = run_annotations(config(root, tmp_path / "data"))
    assert summary["videos_with_offset"] == 2


def test_clip_lists_with_bom_and_trailing_blank_lines(tmp_path: Path) -> None:
    vid, other = "a-b_c-d_e_f", "Other-vid_2"

    def annotate(name: str, path: Path, fmt: str, **kw) -> pd.DataFrame:
        run_annotations(
            AnnotationsConfig(
                data_dir=tmp_path / name, clip_list=[str(path)], clip_list_format=fmt, **kw
            )
        )
        return load_manifest(tmp_path / name)

    vgg = tmp_path / "vggsound.csv"
    vgg.write_text(f"{vid},0,dog barking,train\n{other},5,cat,test\n")
    clean = annotate("vgg_clean", vgg, "vggsound")
    _dirty(vgg, crlf=True)
    dirty = annotate("vgg_dirty", vgg, "vggsound")
    assert list(dirty["clip_id"]) == list(clean["clip_id"]) == [f"{vid}_0", f"{other}_5000"]
    assert load_classes(tmp_path / "vgg_dirty") == load_classes(tmp_path / "vgg_clean")

    table = tmp_path / "clips.csv"
    table.write_text(f"youtube_id,start,end,label\n{vid},0,10,dog\n{other},2.5,12.5,cat\n")
    _dirty(table)
    manifest = annotate("table", table, "table")
    assert list(manifest["clip_id"]) == [f"{vid}_0", f"{other}_2500"]
    assert load_classes(tmp_path / "table")[:2] == ["cat", "dog"]

    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text("index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/05tny_,Bark\n")
    _dirty(labels)
    segments = tmp_path / "balanced_train_segments.csv"
    segments.write_text(
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        f'{vid}, 0.000, 10.000, "/m/09x0r"\n{other}, 5.500, 15.500, "/m/05tny_"\n'
    )
    _dirty(segments)
    annotate("audioset", segments, "audioset", class_labels=str(labels), labels=["Speech"])
    assert load_classes(tmp_path / "audioset") == ["Speech", "background"]
