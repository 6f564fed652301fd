"""One runner protocol, one exporter and op kinds as one typed record (issue 16, defect 10)."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwnas.export.parity import OnnxRuntimeRunner
from hwnas.latency_tables import OpKey
from hwnas.core.ops import HeadSpec, OpKind, StemSpec
from hwnas.profilers import get_profiler
from hwnas.profilers.statistics import StatsConfig
from hwnas.runtimes import Runner
from hwnas.runtimes import onnx_model
from hwnas.core.spaces import get_space


def test_profiling_and_export_runners_share_one_protocol(tmp_path):
    module = nn.Conv2d(3, 4, 3, padding=1).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)
    proto = onnx_model.export_onnx(module, torch.from_numpy(x), "torchscript", 17)
    with OnnxRuntimeRunner(proto.SerializeToString(), threads=1) as runner:
        assert isinstance(runner, Runner)
        with torch.inference_mode():
            np.testing.assert_allclose(runner.infer(x), module(torch.from_numpy(x)).numpy(), atol=1e-5)
        runner.timing_input = x
        assert runner.time_call() > 0
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    for backend in ("ort-cpu", "torch-cpu"):
        with get_profiler(backend, stats=StatsConfig.quick()) as profiler:
            op_runner = profiler.prepare(module, (1, 3, 8, 8))
            assert isinstance(op_runner, Runner)
            with op_runner:
                assert op_runner.time_call() > 0 and op_runner.memory().param_bytes > 0
                np.testing.assert_allclose(op_runner.infer(x), want, atol=1e-5)
            op_runner.close()  # the profiling name of deactivate; twice is harmless
            assert profiler.measure(module, (1, 3, 8, 8)).count >= 1 and profiler.overhead_ms() > 0


def test_the_profilers_export_through_the_one_exporter(monkeypatch):
    calls = []
    real = onnx_model.export_onnx
    monkeypatch.setattr(onnx_model, "export_onnx", lambda *a, **k: calls.append(a[2:]) or real(*a, **k))
    with get_profiler("ort-cpu", stats=StatsConfig.quick()) as profiler:
        with profiler.prepare(nn.ReLU(), (1, 3, 8, 8)) as runner:
            model = onnx.load_from_string(runner.model)
    assert calls and [o.name for o in model.graph.output] == ["output"]
    assert model.opset_import[0].version == onnx_model.EXPORTERS["torchscript"].profile_opset == 17


def test_op_kinds_are_one_typed_record():
    space = get_space("tiny")
    ops = space.all_ops()
    assert {op.kind for op in ops} == {OpKind.STEM, OpKind.BLOCK, OpKind.HEAD}
    assert all(isinstance(op.kind, OpKind) for op in ops)
    stem = ops[0]
    assert stem.kind == "stem" and f"{stem.kind}" == "stem" and hash(OpKind.STEM) == hash("stem")
    assert stem.stem == StemSpec(space.build_config.stem_size) and stem.out_chs() == space.build_config.stem_size
    head = ops[-1]
    assert head.head == HeadSpec(space.build_config.num_features, space.num_classes)
    key = OpKey.for_op(head, space.build_config.name)
    assert OpKey.parse(key.text) == key and OpKey.parse(key.text).kind is OpKind.HEAD
    with pytest.raises(ValueError, match="op kind must be stem, block or head"):
        OpKind.parse("tail")
    with pytest.raises(ValueError, match="head spec"):
        HeadSpec.parse("f12")
