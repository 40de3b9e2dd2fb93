"""Importing the AVE release's PyTorch-0.3 whole-module pickles (AV_att, AV_att_weak, DMRN).

The real files cannot be fetched here, so the tests write such pickles themselves
(``tests/release_pickles.py``: release-style networks saved the way PyTorch 0.3 did) and read them
with the restricted unpickler.
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import sys

import pytest
import torch
from torch import nn

from models.release.localization import (
    RELEASE_CLASS,
    check_release_tensors,
    release_spec,
    resolve_arch,
)
from models.release.unpickler import ReleaseCheckpointError, read_release_checkpoint
from tests.support.release_pickles import Evil, release_network, save_release_pickle

ARCHS = ("av_att", "av_att_weak", "dmrn")


def _pickle_globals(path) -> list[list[str]]:
    """The globals each of the pickles in a legacy torch file names (magic, protocol, sys info, data)."""
    raw = io.BytesIO(path.read_bytes())
    out = []
    for _ in range(4):
        names, strings = [], []
        for op, arg, _pos in pickletools.genops(raw):
            if op.name == "GLOBAL":
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
        out.append(names)
    return out


def test_fixture_pickles_like_pytorch_03(tmp_path):
    """The written file has the 0.3 layout and names the release's class, and sys.modules is restored."""
    import models

    path = save_release_pickle(release_network("av_att"), tmp_path / "AV_att.pt", "av_att")
    magic, protocol, sys_info, data = _pickle_globals(path)
    assert magic == protocol == sys_info == []
    for name in (
        "models.att_Net",
        "torch.nn.parameter.Parameter",
        "torch._utils._rebuild_tensor",
        "torch.nn.backends.thnn._get_thnn_function_backend",
        "torch.nn._functions.rnn.Unserializable",
        "torch.nn.modules.rnn.LSTM",
    ):
        assert name in data, name
    assert "torch._utils._rebuild_tensor_v2" not in data
    assert sys.modules["models"] is models
    assert "torch.nn._functions.rnn" not in sys.modules


@pytest.mark.parametrize("arch", ARCHS)
def test_reads_legacy_pickle(tmp_path, arch):
    kwargs = {"nb_block": 2} if arch == "dmrn" else {}
    net = release_network(arch, **kwargs)
    ckpt = read_release_checkpoint(save_release_pickle(net, tmp_path / "release.pt", arch))
    assert ckpt.format == "legacy" and ckpt.release_class == RELEASE_CLASS[arch]
    expected = net.state_dict()
    assert sorted(ckpt.tensors) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(ckpt.tensors[name], tensor), name
    assert ckpt.attributes["hidden_dim"] == 128
    # the LSTM weights share one buffer (cuDNN's flat weights), rebuilt as views into it
    assert ckpt.tensors["lstm_video.weight_hh_l0"].storage_offset() > 0
    if arch == "dmrn":
        assert ckpt.attributes["nb_block"] == 2
    spec = check_release_tensors(arch, ckpt)
    assert spec == {k: tuple(v.shape) for k, v in expected.items()}
    assert len(ckpt.sha256) == 64


def test_reads_zip_whole_module_and_state_dict(tmp_path):
    net = release_network("dmrn")
    zipped = read_release_checkpoint(
        save_release_pickle(net, tmp_path / "z.pt", "dmrn", zip_format=True)
    )
    torch.save(net.state_dict(), tmp_path / "sd.pt", _use_new_zipfile_serialization=False)
    state = read_release_checkpoint(tmp_path / "sd.pt")
    assert zipped.format == "zip" and zipped.release_class == "models_fusion.TBMRF_Net"
    assert state.format == "legacy" and state.release_class is None
    for ckpt in (zipped, state):
        assert sorted(ckpt.tensors) == sorted(release_spec("dmrn"))
        for name, tensor in net.state_dict().items():
            assert torch.equal(ckpt.tensors[name], tensor), name
    assert resolve_arch("auto", zipped) == "dmrn" and resolve_arch("dmrn", state) == "dmrn"
    with pytest.raises(ReleaseCheckpointError, match="name the network with --arch"):
        resolve_arch("auto", state)


@pytest.mark.parametrize(
    ("zip_format", "func", "recorded"),
    [(False, os.system, "posix.system"), (True, eval, "builtins.eval")],
)
def test_refuses_foreign_globals_without_running_them(tmp_path, zip_format, func, recorded):
    marker = tmp_path / "executed"
    net = release_network("av_att")
    command = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    net.payload = Evil(func, command)
    path = save_release_pickle(net, tmp_path / "evil.pt", "av_att", zip_format=zip_format)
    if not zip_format:  # the file really calls the global when unpickled normally
        assert recorded in _pickle_globals(path)[3]
    with pytest.raises(ReleaseCheckpointError, match="not on the allow-list") as err:
        read_release_checkpoint(path)
    assert recorded in str(err.value) and "nothing was executed" in str(err.value)
    assert not marker.exists()


def test_refuses_missing_misshapen_and_unexpected_tensors(tmp_path):
    net = release_network("av_att")
    net.L1.bias = None
    net.lstm_video.bias_hh_l0_reverse = None
    net.affine_h.weight = nn.Parameter(torch.zeros(1, 50))
    net.extra = nn.Linear(2, 2)
    ckpt = read_release_checkpoint(save_release_pickle(net, tmp_path / "bad.pt", "av_att"))
    with pytest.raises(ReleaseCheckpointError) as err:
        check_release_tensors("av_att", ckpt)
    message = str(err.value)
    assert "missing: lstm_video.bias_hh_l0_reverse, L1.bias" in message
    assert "misshapen: affine_h.weight (found (1, 50), expected (1, 49))" in message
    assert "unexpected: extra.bias, extra.weight" in message


def test_refuses_the_wrong_release_network(tmp_path):
    ckpt = read_release_checkpoint(
        save_release_pickle(release_network("av_att_weak"), tmp_path / "w.pt", "av_att_weak")
    )
    with pytest.raises(ReleaseCheckpointError, match="--arch av_att_weak"):
        check_release_tensors("av_att", ckpt)
    with pytest.raises(ReleaseCheckpointError, match="--arch av_att_weak"):
        check_release_tensors("dmrn", ckpt)


def test_unreadable_and_absent_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(ReleaseCheckpointError, match="junk.pt"):
        read_release_checkpoint(junk)
    with pytest.raises(ReleaseCheckpointError, match="AV_att.pt"):
        read_release_checkpoint(tmp_path / "absent.pt")


# --- onto our networks (needs models.release.names / build_model) -----------------------------


def _our_networks():
    return pytest.importorskip("models.release.names", reason="avel's localization networks needed")


def _inputs(batch: int = 3):
    g = torch.Generator().manual_seed(1)
    audio = torch.rand(batch, 10, 128, generator=g) * 2
    visual = torch.rand(batch, 10, 7, 7, 512, generator=g) * 3  # pool5-like: >= 0
    return audio, visual


@pytest.mark.parametrize(
    ("arch", "nb_block"), [("av_att", None), ("av_att_weak", None), ("dmrn", 1), ("dmrn", 2)]
)
def test_mapped_network_computes_the_release_forward(tmp_path, arch, nb_block):
    _our_networks()
    from models import build_model
    from models.release.localization import load_release_model

    net = release_network(arch, **({"nb_block": nb_block} if nb_block else {}))
    model, ckpt, found = load_release_model(save_release_pickle(net, tmp_path / "r.pt", arch))
    assert found == arch  # from the class the pickle records
    audio, visual = _inputs()
    with torch.no_grad():
        logits, theirs = model(audio, visual), net(audio, visual)
        if arch == "av_att_weak":
            video_probs, score = theirs
            torch.testing.assert_close(logits, score, rtol=0, atol=1e-5)
            ours_video = torch.softmax(model.video_logits(logits), -1)
            torch.testing.assert_close(ours_video, video_probs, rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(torch.softmax(logits, -1), theirs, rtol=0, atol=1e-6)
        # the quirks are what makes it equal: switched off, the same weights compute otherwise
        config = dict(model.config)
        name, classes = config.pop("name"), config.pop("num_classes")
        quirks = [{"broadcast": "paper"}]
        if nb_block == 2:
            quirks.append({"swap_residual": False})
        for off in quirks:
            other = build_model(name, num_classes=classes, **{**config, **off})
            other.load_state_dict(model.state_dict())
            assert (other.eval()(audio, visual) - logits).abs().max() > 1e-3, off
    if arch == "dmrn":
        assert model.config["num_blocks"] == nb_block and model.config["shared_blocks"]


def test_import_checkpoint_writes_an_evaluable_run(tmp_path, capsys):
    _our_networks()
    from models.data.ave import AVEDataset
    from models.data.synthetic import make_synthetic_store
    from models.training.checkpoint import load_checkpoint
    from pipeline.cli import main as avel
    from pipeline.core.fetch import sha256_file

    data_dir = tmp_path / "data"
    make_synthetic_store(data_dir, 10, num_classes=28, shard_size=8, stores=("audio", "visual"))
    net = release_network("dmrn")
    source = save_release_pickle(net, tmp_path / "DMRN.pt", "dmrn")
    run = tmp_path / "run"
    args = ["import-checkpoint", str(source), "--out", str(run)]  # --arch auto: dmrn
    assert avel([*args, "--data-dir", str(data_dir)]) == 0
    assert "imported as dmrn" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["imported"]["sha256"] == sha256_file(source)
    assert config["imported"]["release_class"] == "models_fusion.TBMRF_Net"
    model, payload = load_checkpoint(run / "best.pt")  # weights_only: a plain state dict
    assert payload["sha256"] == sha256_file(source)
    audio, visual = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.softmax(model(audio, visual), -1), net(audio, visual), rtol=0, atol=1e-6
        )
    assert avel([*args, "--data-dir", str(data_dir)]) == 0  # same file: nothing to do
    assert "already imported" in capsys.readouterr().out

    assert avel(["evaluate", "--run", str(run), "--device", "cpu"]) == 0
    result = json.loads((run / "eval-test.json").read_text())
    test = AVEDataset(data_dir, "test", ("audio", "visual"))
    batch = test.batch(list(range(len(test))))
    with torch.no_grad():
        predicted = net(batch["audio"], batch["visual"]).argmax(-1)
    expected = (predicted == batch["segment_labels"]).float().mean().item()
    assert result["segments"] == predicted.numel()
    assert result["accuracy"] == pytest.approx(expected)


def test_import_checkpoint_refuses_with_the_names(tmp_path, capsys):
    from pipeline.cli import main as avel

    net = release_network("av_att")
    net.L2.weight = nn.Parameter(torch.zeros(28, 64))
    source = save_release_pickle(net, tmp_path / "AV_att.pt", "av_att")
    out = tmp_path / "run"
    assert avel(["import-checkpoint", str(source), "--arch", "av_att", "--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert "misshapen: L2.weight (found (28, 64), expected (29, 64))" in message
    assert not (out / "config.json").exists()


def test_allow_list():
    from collections import OrderedDict

    from models.release.unpickler import ReleaseModule, resolve_global

    assert resolve_global("__builtin__", "set") is set  # Python 2 names
    assert resolve_global("collections", "OrderedDict") is OrderedDict
    for module, name in [
        ("models", "att_Net"),
        ("models_fusion", "TBMRF_Net"),
        ("__main__", "att_Net"),
        ("torch.nn.modules.rnn", "LSTM"),
    ]:
        cls = resolve_global(module, name)
        assert issubclass(cls, ReleaseModule) and cls.release_class == f"{module}.{name}"
    for module, name in [
        ("builtins", "getattr"),
        ("builtins", "eval"),
        ("copy_reg", "_reconstructor"),
        ("torch", "load"),
        ("torch.nn.functional", "relu"),
        ("models", "helper"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("os", "system"),
        ("subprocess", "Popen"),
        ("__main__", "Exploit"),
    ]:
        with pytest.raises(ReleaseCheckpointError, match="not on the allow-list"):
            resolve_global(module, name)
