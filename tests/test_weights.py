"""The weights store: manifest, resolving, offline fetch, safe loading."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from meshcli import records
from meshcli import weights as store
from meshcli.checkpoints import load_state_dict_strict, torch_load
from meshcli.errors import MeshcliError
from meshcli.types import file_sha256


def test_manifest_lists_every_method_with_source_and_licence():
    known = records.manifest()
    assert {e.method for e in known.values()} >= {"dekr", "hmr", "spin", "i2l", "srn", "smpl"}
    for e in known.values():
        assert e.url.startswith("http") and e.licence and e.format and e.file


def test_missing_checkpoint_names_the_file_and_the_import_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path))
    with pytest.raises(MeshcliError) as err:
        store.resolve("dekr", "w32-coco", None, False)
    line = err.value.line()
    assert str(tmp_path / "pose_dekr_hrnetw32_coco.pth") in line
    assert "meshcli weights import dekr-w32-coco" in line and "\n" not in line


def test_store_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path))
    (tmp_path / "pose_dekr_hrnetw32_coco.pth").write_bytes(b"x")
    assert store.resolve("dekr", "w32-coco", None, False) == tmp_path / "pose_dekr_hrnetw32_coco.pth"
    assert store.resolve("dekr", "w32-coco", None, True) is None  # --random-weights


def test_explicit_weights_path_must_exist(tmp_path):
    with pytest.raises(MeshcliError, match="not found"):
        store.resolve("dekr", "w32-coco", tmp_path / "nope.pth", False)
    with pytest.raises(MeshcliError, match="is a folder"):
        store.resolve("dekr", "w32-coco", tmp_path, False)
    prefix = tmp_path / "model.ckpt-1"
    (tmp_path / "model.ckpt-1.index").write_bytes(b"x")  # TF checkpoints are named by prefix
    assert store.resolve("hmr", "resnet50-ief", prefix, False) == prefix


def test_fetch_without_network_says_which_url_failed_and_that_import_works(monkeypatch):
    entry = records.record("spin")
    offline = records.WeightsRecord(**{**entry.__dict__, "url": "http://127.0.0.1:9/model_checkpoint.pt"})
    monkeypatch.setattr(records, "manifest", lambda: {"spin": offline})
    with pytest.raises(MeshcliError) as err:
        store.fetch("spin", progress=False)
    line = err.value.line()
    assert "http://127.0.0.1:9/model_checkpoint.pt" in line and "meshcli weights import" in line


def test_fetch_of_a_manual_download_explains_where_to_get_it():
    with pytest.raises(MeshcliError, match="no direct download"):
        store.fetch("dekr-w32-coco", progress=False)


def test_torch_load_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(MeshcliError, match="evil.pth"):
        torch_load(bad, holds=1 << 20)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_torch_load_reports_empty_and_truncated_files(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(MeshcliError) as err:
        torch_load(path, holds=1 << 20)
    assert "w.pth" in err.value.line()


def test_strict_mapping_names_missing_extra_and_misshaped_keys():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    good = {k: v.clone() for k, v in module.state_dict().items()}
    good["1.num_batches_tracked"] = torch.zeros(1, dtype=torch.int64)  # old-style [1] is accepted
    load_state_dict_strict(module, good, "ok.pth")
    missing = dict(good)
    del missing["0.bias"]
    with pytest.raises(MeshcliError, match="'0.bias'"):
        load_state_dict_strict(module, missing, "m.pth")
    extra = {**good, "head.weight": torch.zeros(1)}
    with pytest.raises(MeshcliError, match="'head.weight'"):
        load_state_dict_strict(module, extra, "e.pth")
    wrong = {**good, "0.weight": torch.zeros(4, 3)}
    with pytest.raises(MeshcliError, match=r"0\.weight \(4, 3\) \(expected \(2, 3\)\)"):
        load_state_dict_strict(module, wrong, "w.pth")


def test_import_checks_the_file_then_stores_it_with_provenance(parity_checkpoints, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from meshcli.cli import app

    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    rescore = parity_checkpoints("dekr-w32-coco", "rescore_spec.json")
    run = CliRunner().invoke(app, ["weights", "import", "dekr-rescore-coco", str(rescore)])
    assert run.exit_code == 0, run.output
    stored = tmp_path / "store" / "final_rescore_coco_kpt.pth"
    assert stored.read_bytes() == rescore.read_bytes()
    record = json.loads((tmp_path / "store" / "final_rescore_coco_kpt.pth.provenance.json").read_text())
    assert record["source_bytes"] == rescore.stat().st_size and record["sha256"] == file_sha256(stored)
    listing = CliRunner().invoke(app, ["weights", "list"], env={"COLUMNS": "250"})
    assert "dekr-rescore-coco" in listing.output and "yes" in listing.output

    # the CrowdPose rescoring net has another input width: refused by name, nothing stored
    run = CliRunner().invoke(app, ["weights", "import", "dekr-rescore-crowdpose", str(rescore)])
    assert run.exit_code != 0 and "l1.weight" in run.output
    assert not (tmp_path / "store" / "final_rescore_crowd_pose_kpt.pth").exists()
    assert not list((tmp_path / "store").glob(".*part*"))
