"""Untrusted model folders: crafted files that tests/test_model_checkpoint.py does not cover.

Loading reads only ``config.json`` (size-capped JSON) and ``model.safetensors``;
whatever a hostile folder holds ends in :class:`ModelFileError` with a readable
message: never code execution, a huge allocation, a hang or another exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from chopinbot.errors import ModelFileError
from chopinbot.model.checkpoint import save_model
from chopinbot.model.formats import load_model
from chopinbot.model.network import ChopinLSTM, ModelConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "chopinbot"


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model") / "good"
    save_model(d, ChopinLSTM(ModelConfig(layers=1, hidden=16, duration_classes=[0.5, 1.0])), {"epoch": 1})
    return d


def copy_of(good_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "crafted"
    shutil.copytree(good_dir, d)
    return d


def edit_config(d: Path, change, keep_sha: bool = True) -> None:
    cfg = json.loads((d / "config.json").read_text())
    change(cfg)
    if not keep_sha:
        cfg.pop("weights_sha256", None)
    (d / "config.json").write_text(json.dumps(cfg))


def set_weights(d: Path, raw: bytes) -> None:
    """Replace the weights file and record its sha256, so only the format check can stop it."""
    (d / "model.safetensors").write_bytes(raw)
    edit_config(d, lambda c: c.update(weights_sha256=hashlib.sha256(raw).hexdigest()))


def refused(d: Path, match: str | None = None) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(d)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600, msg
    if match:
        assert re.search(match, msg, re.I), msg
    return msg


# --- the weights file ------------------------------------------------------------------------------

def _safetensors(header: dict, data: bytes = b"", header_len: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if header_len is None else header_len) + h + data


def test_header_claiming_huge_shapes_is_refused_without_allocating(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    names = list(load_file(str(d / "model.safetensors")))
    header = {k: {"dtype": "F32", "shape": [10**9, 10**6], "data_offsets": [0, 16]} for k in names}
    set_weights(d, _safetensors(header, b"\0" * 16))
    refused(d, "safetensors")


def test_header_with_offsets_past_the_end_is_refused(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    names = list(load_file(str(d / "model.safetensors")))
    header = {k: {"dtype": "F32", "shape": [4], "data_offsets": [0, 2**40]} for k in names}
    set_weights(d, _safetensors(header, b"\0" * 16))
    refused(d, "safetensors")


def test_header_length_field_of_an_exabyte_is_refused(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    set_weights(d, _safetensors({}, b"", header_len=2**60))
    refused(d, "safetensors")


def test_right_names_wrong_shapes_from_a_bigger_model_are_refused(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    big = ChopinLSTM(ModelConfig(layers=1, hidden=32, duration_classes=[0.5, 1.0]))
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, str(d / "model.safetensors"))
    set_weights(d, (d / "model.safetensors").read_bytes())
    refused(d, "shape")


class _Payload:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_named_model_safetensors_is_never_unpickled(good_dir, tmp_path):
    marker = tmp_path / "pwned"
    for raw in (pickle.dumps({"lstm.weight_ih_l0": _Payload(marker)}), _torch_save_bytes(_Payload(marker), tmp_path)):
        d = copy_of(good_dir, tmp_path)
        set_weights(d, raw)  # the sha256 matches: only the format check stands in the way
        refused(d, "safetensors")
        assert not marker.exists(), "the pickle was executed"
        shutil.rmtree(d)


def _torch_save_bytes(obj, tmp_path: Path) -> bytes:
    p = tmp_path / "model.pt"
    torch.save({"state_dict": obj}, p)  # a torch zip archive with data.pkl inside
    return p.read_bytes()


def test_non_finite_weights_are_refused(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    t = load_file(str(d / "model.safetensors"))
    first = next(iter(t))
    t[first] = torch.full_like(t[first], float("nan"))
    save_file(t, str(d / "model.safetensors"))
    set_weights(d, (d / "model.safetensors").read_bytes())
    refused(d, "finite|nan")


# --- the config ------------------------------------------------------------------------------------

def test_config_of_10_mb_is_refused_before_parsing(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["padding"] = "x" * 10_000_000
    (d / "config.json").write_text(json.dumps(cfg))
    refused(d, "larger than")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"model": ' + "{\"a\": " * 50_000 + "1" + "}" * 50_001])
def test_deeply_nested_json_is_refused(good_dir, tmp_path, text):
    d = copy_of(good_dir, tmp_path)
    (d / "config.json").write_text(text)
    refused(d)


@pytest.mark.parametrize("field, value", [
    ("hidden", 16.5), ("layers", 1.5), ("note_hidden", 4.5), ("dur_nodes", 20.5), ("hidden", "16"),
    ("grid_per_beat", 0), ("grid_per_beat", "x"), ("grid_per_beat", 10**9), ("dropout", "0.1"),
    ("duration_classes", "ab"), ("duration_classes", [0.5, None]), ("max_duration", float("inf")),
])
def test_config_field_of_the_wrong_type_or_range_is_refused(good_dir, tmp_path, field, value):
    d = copy_of(good_dir, tmp_path)
    edit_config(d, lambda c: c["model"].update({field: value}))
    refused(d, field)


def test_huge_integer_in_config_is_refused(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    (d / "config.json").write_text((d / "config.json").read_text().replace('"hidden": 16', '"hidden": 1' + "0" * 5000))
    refused(d)


# --- files that are not what they say ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_file_symlinked_outside_the_folder_is_refused(good_dir, tmp_path, name):
    d = copy_of(good_dir, tmp_path)
    outside = tmp_path / f"elsewhere-{name}"
    shutil.move(d / name, outside)
    os.symlink(outside, d / name)
    refused(d, name)


def test_config_that_is_a_folder_is_refused(good_dir, tmp_path):
    d = copy_of(good_dir, tmp_path)
    (d / "config.json").unlink()
    (d / "config.json").mkdir()
    refused(d, "config.json")


# Devices and pipes hang or exhaust memory when a loader trusts st_size and reads to the
# end, so these run in a subprocess with a memory cap and an alarm per case.
_SPECIAL = {
    "config -> /dev/zero": ("config.json", "/dev/zero"),
    "weights -> /dev/zero": ("model.safetensors", "/dev/zero"),
    "weights -> /dev/urandom": ("model.safetensors", "/dev/urandom"),
    "config is a fifo": ("config.json", "fifo"),
}

_PROBE = r"""
import json, resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from chopinbot.model.formats import load_model
class Alarm(Exception): pass
def on_alarm(*_): raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
out = {}
for name, folder in json.loads(sys.argv[1]).items():
    signal.alarm(10)
    try:
        load_model(folder)
        out[name] = ["loaded", ""]
    except Alarm:
        out[name] = ["hang", "no answer after 10 s"]
    except BaseException as e:
        out[name] = [type(e).__name__, str(e)[:300]]
    finally:
        signal.alarm(0)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def special_results(good_dir, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("special")
    folders = {}
    for i, (name, (fname, target)) in enumerate(_SPECIAL.items()):
        d = base / f"m{i}"
        shutil.copytree(good_dir, d)
        (d / fname).unlink()
        if target == "fifo":
            os.mkfifo(d / fname)
        else:
            os.symlink(target, d / fname)
        folders[name] = str(d)
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(folders)], capture_output=True, text=True,
                       timeout=240, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(_SPECIAL))
def test_device_or_pipe_in_a_model_folder_is_refused_quickly(special_results, case):
    kind, message = special_results[case]
    assert kind == "ModelFileError", f"{case}: {kind} {message}"
    assert _SPECIAL[case][0] in message


# --- no pickle anywhere in the loading code ----------------------------------------------------------

def test_no_pickle_loading_in_the_package():
    """Static check of the source: no pickle module, no ``torch.load`` without
    ``weights_only=True``, no ``allow_pickle=True``."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport pickle\b|\bpickle\.loads?\(|\bcPickle\b|\bdill\b|\bjoblib\.load", code):
                bad.append(f"{path.name}:{i}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                bad.append(f"{path.name}:{i}: {line.strip()}")
            if "allow_pickle=True" in code:
                bad.append(f"{path.name}:{i}: {line.strip()}")
    assert not bad, "pickle-capable loading: " + "; ".join(bad)
