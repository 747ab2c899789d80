"""Unit tier: atomic writes and checksums (interp.storage.files), probe artifacts, tuned lens."""

import json

import pytest
import torch
from tiny import tiny_model

from interp.errors import PolylensError
from interp.storage.files import (
    CorruptFileError,
    load_safetensors,
    matches_sidecar,
    read_sealed_json,
    save_safetensors,
    write_sealed_json,
    write_sidecar,
)


def flip_bit(path, at=None):
    data = bytearray(path.read_bytes())
    data[len(data) - 3 if at is None else at] ^= 0x40
    path.write_bytes(bytes(data))


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_sealed_json_round_trip_and_damage(tmp_path):
    path = tmp_path / "r.json"
    write_sealed_json(path, {"b": [1, "é"], "a": {"x": None}})
    assert read_sealed_json(path, remedy="redo") == {"b": [1, "é"], "a": {"x": None}}
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind
    write_sealed_json(path, {"per_layer": {2: 0.5, 10: 0.7}, "shape": (1, 2)})  # JSON's own forms
    assert read_sealed_json(path, remedy="redo") == {
        "per_layer": {"2": 0.5, "10": 0.7},
        "shape": [1, 2],
    }
    path.write_text(path.read_text().replace("1", "2"))
    with pytest.raises(CorruptFileError, match=r"differs from its recorded sha256\); redo$"):
        read_sealed_json(path, remedy="redo")
    path.write_text('{"a": ')
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        read_sealed_json(path, remedy="redo")
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(CorruptFileError, match="no recorded sha256"):
        read_sealed_json(path, remedy="redo")


def test_safetensors_checked_on_load(tmp_path):
    path = tmp_path / "t.safetensors"
    digest = save_safetensors(path, {"w": torch.arange(64.0)})
    assert torch.equal(load_safetensors(path, digest, remedy="redo")["w"], torch.arange(64.0))
    write_sidecar(path, digest)
    assert matches_sidecar(path) == digest
    flip_bit(path)
    assert matches_sidecar(path) is None
    with pytest.raises(CorruptFileError, match="t.safetensors is corrupted"):
        load_safetensors(path, digest, remedy="redo")


def test_bit_flipped_probe_is_refused(tmp_path):
    from probes.artifact import load_probe, save_probe
    from probes.linear import LinearProbe

    probe = LinearProbe(torch.ones(2, 3), torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 3))
    path = save_probe(probe, tmp_path / "probe", {"model": {"name": "m"}})
    load_probe(path)
    flip_bit(path)
    with pytest.raises(PolylensError) as e:
        load_probe(path)
    assert_one_line(e, "probe.safetensors is corrupted", "fit the probe again")
    save_probe(probe, tmp_path / "probe", {"model": {"name": "m"}})
    record = tmp_path / "probe.json"
    record.write_text(record.read_text().replace('"m"', '"other"'))
    with pytest.raises(PolylensError) as e:
        load_probe(path)
    assert_one_line(e, "probe.json is corrupted", "fit the probe again")


@pytest.fixture
def cached_lens(monkeypatch):
    """A tuned lens of a tiny model, trained in a few steps on random residuals and cached."""
    from interp.lens import tuned as tuned_lens

    llama = tiny_model("llama")
    residuals = torch.randn(32, llama.n_layers, llama.d_model)
    monkeypatch.setattr(tuned_lens, "training_residuals", lambda *a, **k: residuals)
    config = tuned_lens.TunedLensConfig(steps=2, tokens_per_step=4)
    first = tuned_lens.load_or_train_tuned_lens(llama, config)
    monkeypatch.setattr(tuned_lens, "train_tuned_lens", lambda *a, **k: pytest.fail("retrained"))
    path = tuned_lens._path(llama, config)
    return llama, config, first, path


def test_tuned_lens_cache_is_checked(cached_lens):
    from interp.lens import tuned as tuned_lens

    llama, config, first, path = cached_lens
    again = tuned_lens.load_or_train_tuned_lens(llama, config)
    torch.testing.assert_close(again.weight, first.weight)
    flip_bit(path / "translators.safetensors")
    with pytest.raises(PolylensError) as e:
        tuned_lens.load_or_train_tuned_lens(llama, config)
    assert_one_line(e, "translators.safetensors is corrupted", f"delete {path} to retrain")


def test_unreadable_tuned_lens_cache_is_one_line(cached_lens):
    from interp.lens import tuned as tuned_lens

    llama, config, _, path = cached_lens
    (path / "translators.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(PolylensError) as e:
        tuned_lens.load_or_train_tuned_lens(llama, config)
    assert_one_line(e, "translators.safetensors is corrupted", "to retrain")
    (path / "provenance.json").write_bytes(b"\x00garbage")
    with pytest.raises(PolylensError) as e:
        tuned_lens.load_or_train_tuned_lens(llama, config)
    assert_one_line(e, "provenance.json is corrupted", "to retrain")
