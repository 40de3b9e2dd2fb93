"""Generic clip lists (AudioSet CSV, VGGSound, table) -> manifest -> download -> segments -> features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.manifest import AnnotationError, clip_ids, load_classes, load_manifest
from pipeline.core.store import FeatureStore
from pipeline.demo.server import LoopbackServer
from pipeline.stages.annotations.clip_lists import make_clip_id
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from pipeline.stages.download import DownloadConfig, load_ledger, run_download
from pipeline.stages.features.stage import FeaturesConfig, run_features
from pipeline.stages.segments import SegmentsConfig, load_segments, run_segments
from tests.support.media import duration, make_clip

SHARED = "a-b_c-d_e_f"  # one source video, two clips; '_' and '-' inside on purpose
OTHER = "Other-vid_2"
HEADER = "# Segments csv\n# num_ytids=3\n# YTID, start_seconds, end_seconds, positive_labels\n"


def annotate(data: Path, path: Path, fmt: str, **kw) -> dict:
    return run_annotations(
        AnnotationsConfig(data_dir=data, clip_list=[str(path)], clip_list_format=fmt, **kw)
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    make_clip(root / f"{SHARED}.mp4", duration=16, fps=8, size=(64, 48), frequency=440.0)
    make_clip(root / f"{OTHER}.mp4", duration=12, fps=8, size=(64, 48), frequency=880.0)
    return root


@pytest.fixture
def listing(tmp_path) -> Path:
    path = tmp_path / "vggsound.csv"
    path.write_text(
        f"{SHARED},0,dog barking,train\n{SHARED},6,people cheering,test\n{OTHER},1,dog barking,train\n"
    )
    return path


def download_config(data: Path, server: LoopbackServer, **kw) -> DownloadConfig:
    return DownloadConfig(
        data_dir=data,
        url_template=server.base_url + "/{youtube_id}.mp4",
        workers=2,
        sleep=0.0,
        retries=1,
        backoff=0.05,
        progress=False,
        **kw,
    )


def test_vggsound_list_end_to_end_two_clips_from_one_video(tmp_path, served, listing):
    data = tmp_path / "data"
    summary = annotate(data, listing, "vggsound")
    assert summary["clips"] == 3 and summary["unique_videos"] == 2
    assert summary["videos_with_several_clips"] == 1
    manifest = load_manifest(data)
    keys = list(clip_ids(manifest))
    assert keys == [make_clip_id(SHARED, 0), make_clip_id(SHARED, 6), make_clip_id(OTHER, 1)]
    assert list(manifest["youtube_id"]) == [SHARED, SHARED, OTHER]
    assert list(manifest["clip_start"]) == [0.0, 6.0, 1.0]
    assert list(manifest["clip_end"]) == [10.0, 16.0, 11.0]
    assert load_classes(data) == ["dog barking", "people cheering", "background"]
    assert [list(v) for v in manifest["segment_labels"]] == [[0] * 10, [1] * 10, [0] * 10]
    assert list(manifest["split"]) == ["train", "test", "train"]
    assert annotate(data, listing, "vggsound")["skipped"]

    with LoopbackServer(served) as server:
        result = run_download(download_config(data, server))
        assert result["exit_code"] == 0 and result["this_run"]["downloaded"] == 3
        assert len(server.requests_for(f"{SHARED}.mp4")) >= 2  # both clips cut from one source
    ledger = load_ledger(data).set_index("clip_id")
    assert set(ledger.index) == set(keys) and (ledger["status"] == "ok").all()
    assert list(ledger.loc[keys, "youtube_id"]) == [SHARED, SHARED, OTHER]  # the sources
    for key in keys:
        assert abs(duration(data / "clips" / f"{key}.mp4") - 10.0) < 0.05
    first, second = (data / "clips" / f"{k}.mp4" for k in keys[:2])
    assert first.read_bytes() != second.read_bytes()

    seg = run_segments(SegmentsConfig(data_dir=data, frames_per_segment=2, progress=False))
    assert seg["ok"] == 3 and seg["failed"] == 0
    assert list(dict.fromkeys(load_segments(data)["clip_id"])) == keys
    feats = run_features(
        FeaturesConfig(
            data_dir=data,
            features=("audio",),
            device="cpu",
            allow_random_weights=True,
            allow_download=False,
            dtype="float32",
            progress=False,
        )
    )
    assert not feats["errors"]
    store = FeatureStore.open(data, "audio")
    assert store.clip_ids == keys
    # the two clips of one video carry different audio (440 Hz source, different spans) -> rows
    # are both finite; the other video (880 Hz) differs from the first clip
    rows = store.gather(keys)
    assert np.isfinite(rows).all() and not np.allclose(rows[0], rows[2])


def test_sharded_downloads_in_separate_dirs_merge_by_ingesting(tmp_path, served, listing):
    """K downloaders (one DATA_DIR each, e.g. one per IP) split one list; the main dir ingests."""
    dirs = [tmp_path / f"shard{i}" for i in range(2)]
    with LoopbackServer(served) as server:
        for i, d in enumerate(dirs):
            annotate(d, listing, "vggsound")
            result = run_download(download_config(d, server, num_shards=2, shard_index=i))
            assert result["exit_code"] == 0 and result["videos"] == (2, 1)[i]
    keys = [make_clip_id(SHARED, 0), make_clip_id(SHARED, 6), make_clip_id(OTHER, 1)]
    assert set(load_ledger(dirs[0])["clip_id"]) == {keys[0], keys[2]}
    assert set(load_ledger(dirs[1])["clip_id"]) == {keys[1]}
    main = tmp_path / "main"
    annotate(main, listing, "vggsound")
    for d in dirs:
        merged = run_download(DownloadConfig(data_dir=main, from_dir=d / "clips", progress=False))
        assert merged["exit_code"] == 0
    ledger = load_ledger(main)
    assert set(ledger["clip_id"]) == set(keys) and (ledger["status"] == "ok").all()
    with pytest.raises(ValueError, match="--shard-index 2 outside 0..1"):
        run_download(DownloadConfig(data_dir=main, num_shards=2, shard_index=2, progress=False))


def test_clips_of_one_video_in_a_data_folder_of_the_previous_version(tmp_path, served, listing):
    """The previous version called the clip key ``youtube_id`` in the ledger and the segments
    files, though it held ``<youtube_id>_<start_ms>``: resuming both stages does nothing again,
    and the ledger learns each clip's source video."""
    from tests.support.previous_version import key_columns, write_previous_version

    data = tmp_path / "data"
    annotate(data, listing, "vggsound")
    keys = list(clip_ids(load_manifest(data)))
    segments = SegmentsConfig(data_dir=data, frames_per_segment=2, progress=False)
    with LoopbackServer(served) as server:
        assert run_download(download_config(data, server))["this_run"]["downloaded"] == 3
        assert run_segments(segments)["processed"] == 3
        table = load_segments(data)
        write_previous_version(data)
        assert key_columns(data / "clips" / "status.parquet") == {"youtube_id"}
        assert set(pd.read_parquet(data / "clips" / "status.parquet")["youtube_id"]) == set(keys)
        before = len(server.requests)
        again = run_download(download_config(data, server))
        assert len(server.requests) == before and again["this_run"]["already_ok"] == 3
    ledger = load_ledger(data).set_index("clip_id")
    assert list(ledger.loc[keys, "youtube_id"]) == [SHARED, SHARED, OTHER]
    resumed = run_segments(segments)
    assert resumed["processed"] == 0 and resumed["skipped"] == 3
    pd.testing.assert_frame_equal(load_segments(data), table)
    assert list(dict.fromkeys(table["clip_id"])) == keys


def test_audioset_label_subset_by_name_and_mid(tmp_path):
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text(
        'index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/05tny_,Bark\n2,/m/0k4j,"Car, automobile"\n'
    )
    csv = tmp_path / "balanced_train_segments.csv"
    csv.write_text(
        HEADER
        + f'{SHARED}, 0.000, 10.000, "/m/09x0r,/m/0k4j"\n'
        + f'{SHARED}, 30.000, 40.000, "/m/05tny_"\n'
        + f'{OTHER}, 5.500, 15.500, "/m/09x0r"\n'
    )
    data = tmp_path / "all"
    summary = annotate(data, csv, "audioset", class_labels=str(labels))
    assert summary["clips"] == 3 and summary["classes"] == 4
    manifest = load_manifest(data)
    assert list(manifest["clip_id"]) == [f"{SHARED}_0", f"{SHARED}_30000", f"{OTHER}_5500"]
    assert [list(v) for v in manifest["labels"]] == [[0, 2], [1], [0]]
    assert list(manifest["category"]) == ["Speech", "Bark", "Speech"]
    assert set(manifest["split"]) == {"train"}

    subset = tmp_path / "subset"
    annotate(
        subset, csv, "audioset", class_labels=str(labels), labels=["Car, automobile", "/m/05tny_"]
    )
    manifest = load_manifest(subset)
    assert list(manifest["clip_id"]) == [f"{SHARED}_0", f"{SHARED}_30000"]
    assert load_classes(subset) == ["Car, automobile", "Bark", "background"]
    assert list(manifest["label"]) == [0, 1]
    with pytest.raises(AnnotationError, match="unknown AudioSet class 'Meow'"):
        annotate(tmp_path / "bad", csv, "audioset", class_labels=str(labels), labels=["Meow"])


def test_table_csv_and_parquet_unlabelled_and_errors(tmp_path):
    table = pd.DataFrame({"youtube_id": [SHARED, SHARED], "start": [0, 2.5], "end": [10, 12.5]})
    for path in (tmp_path / "clips.csv", tmp_path / "clips.parquet"):
        if path.suffix == ".csv":
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path)
        data = tmp_path / path.suffix[1:]
        summary = annotate(data, path, "table")
        assert summary["unlabelled_clips"] == 2
        manifest = load_manifest(data)
        assert list(manifest["clip_id"]) == [f"{SHARED}_0", f"{SHARED}_2500"]
        assert list(manifest["label"]) == [-1, -1]
        assert [list(v) for v in manifest["segment_labels"]] == [[0] * 10] * 2  # background only
    bad = tmp_path / "bad.csv"
    bad.write_text("youtube_id,start,end\nshort,0,10\n")
    with pytest.raises(AnnotationError, match=r"bad.csv \(row 1\): malformed YouTube ID 'short'"):
        annotate(tmp_path / "b", bad, "table")
    vgg = tmp_path / "v.csv"
    vgg.write_text(f"{OTHER},0,dog\n")
    with pytest.raises(AnnotationError, match=r"v.csv:1: expected 'youtube_id,start_seconds"):
        annotate(tmp_path / "v", vgg, "vggsound")
