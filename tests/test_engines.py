from __future__ import annotations

import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from lenet_lab.engines import Device, get_engine, parse_device
from lenet_lab.errors import DeviceError, EngineUnavailable, SpecError
from lenet_lab.spec import LeNetSpec
from tests.conftest import BOOK_SHAPES, ENGINES, specs


@pytest.mark.parametrize("engine", ENGINES)
def test_default_spec_has_the_books_shapes(engine: str) -> None:
    layers = get_engine(engine).layer_shapes(LeNetSpec())
    assert [(layer.name, layer.output_shape) for layer in layers] == BOOK_SHAPES
    assert sum(layer.params for layer in layers) == 61706


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(specs)
def test_engines_agree_with_the_spec_on_every_layer(spec: LeNetSpec) -> None:
    # Same per-layer output shapes and trainable parameter counts on both engines,
    # and both equal to the spec's own shape propagation.
    expected = spec.layer_shapes()
    for engine in ENGINES:
        assert get_engine(engine).layer_shapes(spec) == expected, engine


@pytest.mark.parametrize("text, device", [
    ("auto", None), ("cpu", Device("cpu")), ("gpu", Device("gpu", 0)), ("GPU:1", Device("gpu", 1)),
    ("cuda:2", Device("gpu", 2)),
])
def test_parse_device(text: str, device: Device | None) -> None:
    assert parse_device(text) == device


@pytest.mark.parametrize("text", ["tpu", "gpu:-1", "cpu:1", "gpu:x", ""])
def test_parse_device_rejects_nonsense(text: str) -> None:
    with pytest.raises(SpecError, match="device must be auto, cpu, gpu or gpu:N"):
        parse_device(text)


@pytest.mark.parametrize("engine", ENGINES)
def test_asking_for_a_missing_gpu_is_a_clear_error(engine: str) -> None:
    # gpu:<count> is one past the last GPU on any machine, with or without GPUs.
    backend = get_engine(engine)
    count = backend.gpu_count()
    seen = "no GPU" if count == 0 else f"only {count} GPU(s)"
    with pytest.raises(DeviceError, match=rf"{engine} sees {re.escape(seen)}.*, so gpu:{count} is "
                                          r"not available"):
        backend.resolve_device(Device("gpu", count))
    assert backend.resolve_device(None) == (Device("gpu") if count else Device("cpu"))


@pytest.mark.parametrize("engine, module", [("mxnet", "mxnet"), ("torch", "torch")])
def test_missing_framework_gives_an_install_hint(engine: str, module: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail
    monkeypatch.delitem(sys.modules, f"lenet_lab.engines.{engine}_engine", raising=False)
    with pytest.raises(EngineUnavailable, match=rf'pip install "lenet-lab\[{engine}\]"'):
        get_engine(engine)


def test_unknown_engine() -> None:
    with pytest.raises(SpecError, match="engine must be one of mxnet, torch"):
        get_engine("jax")


def test_mxnet_does_not_leave_torch_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three threads asked for, and torch left on one (what importing mxnet does): the
    # engine restores three on any machine, a one-core one included.
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    try:
        get_engine("mxnet")
        torch.set_num_threads(1)
        get_engine("torch")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("channels", [1, 6, 16, 32])
def test_average_pooling_gives_avg_pool2ds_numbers_forward_and_backward(channels: int) -> None:
    """torch_net.AvgPool (oneDNN's depthwise convolution for narrow channels-last maps on a
    CPU) against torch's avg_pool2d: the same numbers, bit for bit, both ways."""
    import torch

    from lenet_lab.engines.torch_net import AvgPool

    torch.manual_seed(channels)
    for layout in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(8, channels, 10, 14).contiguous(memory_format=layout)
        ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        grad = torch.randn(8, channels, 5, 7)
        AvgPool()(ours).backward(grad)
        torch.nn.functional.avg_pool2d(theirs, 2, 2).backward(grad)
        assert torch.equal(AvgPool()(x), torch.nn.functional.avg_pool2d(x, 2, 2))
        assert torch.equal(ours.grad, theirs.grad)
