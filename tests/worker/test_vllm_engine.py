"""The vllm runtime's pure decisions: manifest, engine command and environment, container
settings, probes, warm pool, in-flight count from /metrics, and the image's package pruning."""
from __future__ import annotations

import os

import pytest

from gantry import state as st
from gantry.build.images import remove_distributions, vllm_pins, write_placeholder
from gantry.manifest import FunctionSpec, ManifestError, _validate, load_manifest
from gantry.worker import health, vllmengine
from gantry.worker.containerspec import container_kwargs


def spec(model=None, **top) -> FunctionSpec:
    data = {"name": "chat", "runtime": "vllm", "model": {"path": "model", **(model or {})}, **top}
    return _validate(data, "gantry.toml")


def refused(data: dict) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        _validate(data, "fn/gantry.toml")
    return info.value


def test_manifest_vllm_round_trip_and_cpu_allowed():
    s = spec({"max_model_len": 256, "engine_args": ["--enforce-eager"], "served_name": "tiny"})
    assert s.resources.gpu == 0 and s.handler == "" and s.model.engine_args == ("--enforce-eager",)
    assert FunctionSpec.from_dict(s.to_dict()) == s
    assert "model" not in _validate({"name": "x", "handler": "main:h"}, "t").to_dict()


@pytest.mark.parametrize("data, field, words", [
    ({"name": "c", "runtime": "vllm"}, "model", "needs a [model]"),
    ({"name": "c", "runtime": "vllm", "handler": "main:h", "model": {"path": "m"}}, "handler", "no handler"),
    ({"name": "c", "handler": "main:h", "model": {"path": "m"}}, "model", "only a runtime"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "/etc"}}, "model.path", "relative folder"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "a/../b"}}, "model.path", "relative folder"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "source": "s3"}}, "model.source", "function, node"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "dtype": "int4"}}, "model.dtype", "expected one of"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "max_model_len": -1}}, "model.max_model_len", "whole"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "gpu_memory_utilization": 1.5}},
     "model.gpu_memory_utilization", "fraction"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "engine_args": "--x"}}, "model.engine_args", "list"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "engine_args": ["--api-key", "k"]}},
     "model.engine_args", "--api-key is set by the platform"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "engine_args": ["--port=1"]}},
     "model.engine_args", "--port"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "engine_args": ["--host", "0"]}},
     "model.engine_args", "--host"),
    ({"name": "c", "runtime": "vllm", "model": {"path": "m", "size": 1}}, "model.size", "unknown key"),
])
def test_manifest_refusals_name_the_field(data, field, words):
    exc = refused(data)
    assert exc.field == field and words in exc.message and str(exc).startswith("fn/gantry.toml: ")


def test_load_manifest_checks_a_shipped_model_folder(tmp_path):
    (tmp_path / "gantry.toml").write_text('name = "c"\nruntime = "vllm"\n[model]\npath = "model"\n')
    with pytest.raises(ManifestError, match="model.path: no folder 'model'"):
        load_manifest(str(tmp_path))
    (tmp_path / "model").mkdir()
    with pytest.raises(ManifestError, match="no config.json"):
        load_manifest(str(tmp_path))
    (tmp_path / "model" / "config.json").write_text("{}")
    assert load_manifest(str(tmp_path)).model.path == "model"
    (tmp_path / "gantry.toml").write_text('name = "c"\nruntime = "vllm"\n[model]\npath = "big"\nsource = "node"\n')
    assert load_manifest(str(tmp_path)).model.source == "node"      # checked on the node


def test_engine_command_cpu():
    s = spec({"max_model_len": 256, "served_name": "tiny", "engine_args": ["--seed", "3"]}, scaling={"concurrency": 6})
    cmd = vllmengine.command(s)
    assert cmd[:5] == ["python3", "-m", "vllm.entrypoints.cli.main", "serve", "/app/model"]
    joined = " ".join(cmd)
    assert "--port 8080" in joined and "--host 0.0.0.0" in joined and "--served-model-name tiny" in joined
    assert "--max-model-len 256" in joined and "--enforce-eager" in joined and "--max-num-seqs 6" in joined
    assert cmd[-2:] == ["--seed", "3"] and "--enable-sleep-mode" not in cmd and "--api-key" not in joined
    assert vllmengine.flavour(s) == "cpu"


def test_engine_command_gpu_and_memory_share():
    s = spec({"gpu_memory_utilization": 0.4}, resources={"gpu": 1})
    cmd = vllmengine.command(s)
    assert vllmengine.flavour(s) == "gpu" and "--enable-sleep-mode" in cmd and "--enforce-eager" not in cmd
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.4"
    plain = spec(resources={"gpu": 1})
    assert vllmengine.gpu_memory_utilization(plain, 80 * 2**30) is None     # vLLM's default

    shared = spec(resources={"gpu_memory": "20Gi"})
    assert vllmengine.flavour(shared) == "gpu"
    assert vllmengine.gpu_memory_utilization(shared, 80 * 2**30) == 0.25
    assert vllmengine.gpu_memory_utilization(shared, 81 * 2**30) < 20 / 81     # never rounded up


def test_a_shares_engine_is_sized_by_its_leased_gpu_and_sees_only_it():
    shared = spec(resources={"gpu_memory": "20Gi"})
    kw = container_kwargs(shared, "img", "i1", key="k", network="n",
                          gpu_lease=f"GPU-a={20 * 2**30}", gpu_total=80 * 2**30)
    assert kw["command"][kw["command"].index("--gpu-memory-utilization") + 1] == "0.25"
    assert kw["device_requests"][0]["DeviceIDs"] == ["GPU-a"]
    assert kw["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-a" and kw["labels"]["gantry.engine"] == "gpu"


def test_environment_key_and_flavour():
    cpu = vllmengine.environment(spec(), "k1")
    assert cpu["VLLM_API_KEY"] == "k1" and cpu["VLLM_CPU_KVCACHE_SPACE"] == "1" and "VLLM_SERVER_DEV_MODE" not in cpu
    assert cpu["VLLM_TARGET_DEVICE"] == "cpu"
    assert "VLLM_CPU_KVCACHE_SPACE" not in vllmengine.environment(spec(env={"VLLM_CPU_KVCACHE_SPACE": "4"}), "k")
    gpu = vllmengine.environment(spec(resources={"gpu": 1}), "k2")
    assert gpu["VLLM_SERVER_DEV_MODE"] == "1" and "VLLM_CPU_KVCACHE_SPACE" not in gpu and "VLLM_TARGET_DEVICE" not in gpu


def test_container_kwargs_keep_isolation_and_relax_only_what_the_engine_needs(tmp_path):
    s = spec(env={"VLLM_API_KEY": "mine"})
    kw = container_kwargs(s, "img", "i1", key="secret", network="net")
    assert kw["command"] == vllmengine.command(s)
    assert kw["environment"]["VLLM_API_KEY"] == "secret"          # the instance key wins over [env]
    assert kw["read_only"] and kw["cap_drop"] == ["ALL"] and kw["user"] == "10001:10001" and not kw["privileged"]
    assert kw["ports"] == {"8080/tcp": ("127.0.0.1", None)}
    assert kw["pids_limit"] == vllmengine.PIDS_LIMIT and kw["shm_size"] == vllmengine.SHM_SIZE
    assert "size=512m" in kw["tmpfs"]["/tmp"] and "noexec" in kw["tmpfs"]["/tmp"]
    assert kw["labels"]["gantry.runtime"] == "vllm" and kw["labels"]["gantry.engine"] == "cpu"
    plain = container_kwargs(_validate({"name": "p", "handler": "main:h"}, "t"), "img", "i2", key="k", network="n")
    assert "command" not in plain and plain["pids_limit"] == 256 and plain["labels"]["gantry.runtime"] == "python3.11"


def test_node_models_are_mounted_read_only(tmp_path):
    s = spec({"path": "tiny", "source": "node"})
    with pytest.raises(ValueError, match="GANTRY_MODELS_DIR"):
        container_kwargs(s, "img", "i", key="k", network="n", models_dir="")
    with pytest.raises(ValueError, match="not in this node"):
        container_kwargs(s, "img", "i", key="k", network="n", models_dir=str(tmp_path))
    (tmp_path / "tiny").mkdir()
    kw = container_kwargs(s, "img", "i", key="k", network="n", models_dir=str(tmp_path))
    mount = [m for m in kw["mounts"] if m["Target"] == "/models"][0]
    assert mount["Source"] == str(tmp_path) and mount["ReadOnly"] is True
    assert kw["command"][4] == "/models/tiny"


def test_probe_paths_per_runtime_and_state():
    assert health.probe_request("python3.11", st.STARTING, "k") == ("/healthz", {})
    assert health.probe_request("python3.11", st.READY, "k") == ("/healthz", {})
    assert health.probe_request("vllm", st.STARTING, "k") == ("/v1/models", {"Authorization": "Bearer k"})
    assert health.probe_request("vllm", st.RESUMING, "k") == ("/v1/models", {"Authorization": "Bearer k"})
    assert health.probe_request("vllm", st.READY, "k") == ("/health", {})
    assert health.probe_request("vllm", st.UNHEALTHY, "k") == ("/health", {})


def test_warm_mode_decision():
    assert vllmengine.warm_mode("vllm", "gpu") == "sleep"
    assert vllmengine.warm_mode("vllm", "cpu") == "pause"
    assert vllmengine.warm_mode("python3.11", "gpu") == "pause"
    assert vllmengine.warm_mode("python3.11", "cpu") == "pause"


def test_inflight_from_metrics():
    text = ('# HELP vllm:num_requests_running Number of requests\n'
            'vllm:num_requests_running{engine="0",model_name="chat"} 2.0\n'
            'vllm:num_requests_waiting{engine="0",model_name="chat"} 1.0\n'
            'vllm:num_requests_waiting_by_reason{reason="x"} 5.0\n')
    assert vllmengine.inflight_from_metrics(text) == 3
    assert vllmengine.inflight_from_metrics("vllm:num_requests_running 0.0\n") == 0
    assert vllmengine.inflight_from_metrics("process_cpu_seconds_total 1\n") is None


def test_remove_distributions_by_record_and_placeholder(tmp_path):
    site = str(tmp_path)
    for name, files in (("torchvision", ["torchvision/__init__.py", "torchvision/io/x.so",
                                         "torchvision.libs/libz.so"]),
                        ("torch", ["torch/__init__.py"])):
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        for rel in files:
            os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
            (tmp_path / rel).write_text("x")
            os.makedirs(tmp_path / os.path.dirname(rel) / "__pycache__", exist_ok=True)     # compiled later
            (tmp_path / os.path.dirname(rel) / "__pycache__" / "x.pyc").write_text("x")
        (info / "RECORD").write_text("".join(f"{rel},sha256=a,1\n" for rel in files)
                                     + f"{name}-1.0.dist-info/RECORD,,\n../../bin/evil,,\n")
    assert remove_distributions(site, ("torchvision", "triton")) == ["torchvision"]
    assert sorted(os.listdir(site)) == ["torch", "torch-1.0.dist-info"]    # no namespace-package husk left
    write_placeholder(site, vllm_pins("cpu").placeholder)
    from importlib.metadata import PathDistribution
    import pathlib
    dist = PathDistribution(pathlib.Path(site) / "vllm-0.32.0+cpu.dist-info")
    assert dist.metadata["Name"] == "vllm" and dist.version == "0.32.0+cpu"    # "cpu": vLLM's CPU platform
    assert vllm_pins("cpu").omit == ("torchvision", "torchcodec", "torchaudio", "triton")
    with pytest.raises(Exception, match="flavour 'tpu'"):
        vllm_pins("tpu")
