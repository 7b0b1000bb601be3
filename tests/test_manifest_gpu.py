"""[resources] gpu, gpu_memory and gpu_type: valid forms round-trip, bad ones name file and field."""
from __future__ import annotations

import pytest

from gantry import state
from gantry.manifest import FunctionSpec, ManifestError, load_manifest
from gantry.quantities import parse_size

GiB = 2**30


def write(tmp_path, toml: str) -> str:
    (tmp_path / "gantry.toml").write_text(toml)
    (tmp_path / "main.py").write_text("def handle(event, ctx):\n    return event\n")
    return str(tmp_path)


def _load(tmp_path, resources: str):
    return load_manifest(write(tmp_path, f'name = "llm"\nhandler = "main:handle"\n[resources]\n{resources}\n'))


def test_whole_gpus_and_a_share_with_a_type_preference(tmp_path):
    spec = _load(tmp_path, 'gpu = 2\ngpu_type = ["H100", "A100"]')
    assert (spec.resources.gpu, spec.resources.gpu_memory, spec.resources.gpu_type) == (2, 0, ("H100", "A100"))
    assert spec.resources.wants_gpu
    share = _load(tmp_path, 'gpu_memory = "20G"\ngpu_type = "L4"')
    assert share.resources.gpu_memory == 20 * 10**9 and share.resources.gpu_type == ("L4",)
    for s in (spec, share):
        stored = FunctionSpec.from_dict(state.unpack(state.pack(s.to_dict())))
        assert stored == s
    assert parse_size(share.to_toml_dict()["resources"]["gpu_memory"]) == 20 * 10**9
    plain = _load(tmp_path, "cpu = 1")
    assert not plain.resources.wants_gpu and plain.resources.gpu_type == ()


@pytest.mark.parametrize("resources,field,expected", [
    ('gpu = 1\ngpu_memory = "20G"', "resources.gpu_memory", "either gpu (whole GPUs) or gpu_memory"),
    ('gpu_memory = "lots"', "resources.gpu_memory", "expected"),
    ('gpu_memory = "2Ti"', "resources.gpu_memory", "expected a size from 0 to"),
    ("gpu_memory = 1000", "resources.gpu_memory", "at least 1Mi"),
    ('gpu_memory = "-5G"', "resources.gpu_memory", "expected"),
    ("gpu = -1", "resources.gpu", "a whole number from 0 to 64"),
    ("gpu = 1.5", "resources.gpu", "a whole number"),
    ('gpu_type = ["H100"]', "resources.gpu_type", "only with gpu or gpu_memory"),
    ("gpu = 1\ngpu_type = 7", "resources.gpu_type", "a list of up to 8 GPU names"),
    ('gpu = 1\ngpu_type = ["H100", ""]', "resources.gpu_type", "GPU names of letters"),
    ('gpu = 1\ngpu_type = ["H100", 3]', "resources.gpu_type", "GPU names of letters"),
    ('gpu = 1\ngpu_type = ["H100", "h100"]', "resources.gpu_type", "each GPU name once"),
    ('gpu = 1\ngpu_type = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]', "resources.gpu_type", "up to 8"),
    ('gpu = 1\ngpu_type = ["H100; rm -rf"]', "resources.gpu_type", "GPU names of letters"),
])
def test_bad_gpu_fields_name_file_and_field(tmp_path, resources, field, expected):
    with pytest.raises(ManifestError) as info:
        _load(tmp_path, resources)
    assert info.value.field == field and expected in info.value.message
    assert str(info.value).startswith(str(tmp_path / "gantry.toml") + ": " + field)


def test_a_vllm_function_takes_a_gpu_share_or_none(tmp_path):
    """gpu = 0 runs the CPU engine (docs/vllm.md); a share of one GPU packs engines on a card."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    shared = load_manifest(write(tmp_path, 'name = "m"\nruntime = "vllm"\n[model]\npath = "model"\n'
                                           '[resources]\ngpu_memory = "20G"\ngpu_type = ["L4"]\n'))
    assert shared.resources.gpu == 0 and shared.resources.gpu_memory == 20 * 10**9
    cpu = load_manifest(write(tmp_path, 'name = "m"\nruntime = "vllm"\n[model]\npath = "model"\n'))
    assert cpu.resources.gpu == 0 and cpu.resources.gpu_memory == 0
