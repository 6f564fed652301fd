"""TensorRT 10 and 11 code paths with a stand-in `tensorrt` module (no GPU here): what each version
is asked to build, int8 by explicit quantization (Q/DQ nodes calibrated on real images), the legacy
calibrator only where it exists, unsupported versions refused (issue 16, defect 9)."""

import random
import sys
import types
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from hwnas.core.arch import Arch, save_arch
from hwnas.cli import main
from hwnas.errors import BackendError, ExportError, MissingDependencyError
from hwnas.export import tensorrt_engine as te
from hwnas.export.int8_calibration import ImageBatches
from hwnas.export.model import prepare_model
from hwnas.export.onnx_export import OnnxSpec, export_model
from hwnas.export.quantize import count_qdq
from hwnas.core.spaces import get_space


def fake_tensorrt(version: str) -> types.ModuleType:
    """A stand-in for TensorRT's Python API: records what hwnas asks the builder for. Version 10
    has precision flags and the legacy calibrator; version 11 has neither (strongly typed only)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    flags = ["TF32"] + (["FP16", "INT8"] if major < 11 else [])
    trt.BuilderFlag = SimpleNamespace(**{f: f for f in flags})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.built = []

    class ILogger:
        Severity = SimpleNamespace(ERROR=1, WARNING=2)

        def __init__(self):
            pass

    class Network:
        graph = None

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            self.network.graph = data
            return True

    class Config:
        def __init__(self):
            self.flags, self.cleared, self.profiles, self.int8_calibrator = set(), set(), [], None

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.cleared.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, creation_flags):
            network = Network()
            network.creation_flags = creation_flags
            return network

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.built.append(SimpleNamespace(network=network, config=config))
            return b"serialized engine"

    trt.ILogger, trt.OnnxParser, trt.Builder = ILogger, Parser, Builder
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


@pytest.fixture
def use_tensorrt(monkeypatch):
    def install(version):
        trt = fake_tensorrt(version)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(te, "require_gpu", lambda: None)
        return trt
    return install


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trt")
    space = get_space("tiny")
    save_arch(Arch.create(space, space.sample(random.Random(5))), folder / "arch.json")
    source = prepare_model(str(folder / "arch.json"))
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return export_model(source, OnnxSpec(batch=4, opset=17, exporter="torchscript")), images, folder


def spec(**kw):
    return te.EngineSpec(resolution=32, batch=4, **kw)


@pytest.mark.parametrize("version, kw, strongly_typed, flags, graph", [
    ("10.13.0", {}, False, (), ()),
    ("10.13.0", {"fp16": True}, False, ("FP16",), ()),
    ("10.13.0", {"int8": True}, False, ("INT8",), ("qdq",)),
    ("10.13.0", {"int8": True, "fp16": True}, False, ("FP16", "INT8"), ("qdq",)),
    ("11.0.0", {}, False, (), ()),
    ("11.0.0", {"fp16": True}, True, (), ("fp16",)),
    ("11.0.0", {"int8": True}, True, (), ("qdq",)),
])
def test_build_plans_by_version(version, kw, strongly_typed, flags, graph):
    plan = te.plan_build(fake_tensorrt(version), spec(**kw))
    assert (plan.strongly_typed, plan.set_flags, plan.graph) == (strongly_typed, flags, graph)
    assert plan.clear_flags == (("TF32",) if not kw else ())
    assert not plan.legacy_int8


def test_the_legacy_calibrator_only_where_it_still_exists():
    assert te.plan_build(fake_tensorrt("10.13.0"), spec(int8=True, int8_mode="legacy")).legacy_int8
    with pytest.raises(ExportError, match="TensorRT 11.0.0 has no implicit int8 calibration.*--int8-mode qdq"):
        te.plan_build(fake_tensorrt("11.0.0"), spec(int8=True, int8_mode="legacy"))
    with pytest.raises(ExportError, match="strongly typed.*drop --fp16 or --int8"):
        te.plan_build(fake_tensorrt("11.0.0"), spec(int8=True, fp16=True))


@pytest.mark.parametrize("version", ["9.3.0", "12.0.0"])
def test_unsupported_versions_are_refused(version, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version))
    with pytest.raises(MissingDependencyError, match=f"TensorRT {version} is not supported.*10.x and 11.x"):
        te.import_tensorrt()


@pytest.mark.parametrize("version", ["10.13.0", "11.0.0"])
def test_int8_is_explicit_quantization_calibrated_on_real_images(version, use_tensorrt, tiny_onnx):
    onnx_bytes, images, _ = tiny_onnx
    trt = use_tensorrt(version)
    batches = ImageBatches(images, 32, batch_size=4, count=8)
    assert te.build_engine(onnx_bytes, spec(int8=True), batches) == b"serialized engine"
    (built,) = trt.built
    graph = built.network.graph
    assert count_qdq(graph) > 0, "Q/DQ nodes in the graph TensorRT parses"
    assert built.network.creation_flags == (0 if version.startswith("10") else 1 << 1)
    assert built.config.flags == ({"INT8"} if version.startswith("10") else set())
    assert built.config.int8_calibrator is None
    # the quantized graph is a faithful int8 model: ONNX Runtime runs it close to the fp32 one
    fp32 = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    for x in batches:
        want, got = fp32.run(None, {"input": x})[0], qdq.run(None, {"input": x})[0]
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < te.TOLERANCES["int8"]


def test_fp16_on_tensorrt_11_is_a_float16_graph_with_float32_edges(use_tensorrt, tiny_onnx):
    onnx_bytes, _, _ = tiny_onnx
    trt = use_tensorrt("11.0.0")
    te.build_engine(onnx_bytes, spec(fp16=True))
    model = onnx.load_from_string(trt.built[0].network.graph)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def test_the_legacy_path_on_tensorrt_10_uses_the_entropy_calibrator(use_tensorrt, tiny_onnx):
    onnx_bytes, images, _ = tiny_onnx
    trt = use_tensorrt("10.13.0")
    te.build_engine(onnx_bytes, spec(int8=True, int8_mode="legacy"), ImageBatches(images, 32, 4, count=8))
    (built,) = trt.built
    assert count_qdq(built.network.graph) == 0 and built.config.flags == {"INT8"}
    assert isinstance(built.config.int8_calibrator, trt.IInt8EntropyCalibrator2)


def test_the_profiler_builds_through_the_same_builder(tiny_onnx):
    """build_serialized is the profilers' builder too: its errors and configure hook."""
    onnx_bytes, _, _ = tiny_onnx
    trt = fake_tensorrt("10.13.0")
    seen = []
    te.build_serialized(trt, onnx_bytes, workspace_mb=64, set_flags=("INT8",), error=BackendError,
                        configure=lambda builder, network, config: seen.append(network))
    assert seen and trt.built[0].config.workspace == 64 << 20
    with pytest.raises(BackendError, match="no BuilderFlag.FP16"):
        te.build_serialized(fake_tensorrt("11.0.0"), onnx_bytes, workspace_mb=64, set_flags=("FP16",),
                            error=BackendError)


def test_export_preflight_refuses_legacy_int8_on_tensorrt_11_before_writing(use_tensorrt, tiny_onnx, capsys):
    _, images, folder = tiny_onnx
    use_tensorrt("11.0.0")
    out = folder / "out"
    code = main(["export", str(folder / "arch.json"), "--onnx", str(out / "m.onnx"), "--tensorrt",
                 str(out / "m.engine"), "--int8", "--int8-mode", "legacy", "--calib-data", str(images)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no implicit int8" in err and "\n" not in err
    assert not out.exists()
