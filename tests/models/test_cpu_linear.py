"""Decode-step linears as W @ x^T: the same products as F.linear, only while asked, never on wrapped layers."""

import pytest
import torch
import torch.nn.functional as F

from llm_tuning.models.cpu_linear import FEW_ROWS, linears_on_cpu, rows_first


@pytest.mark.parametrize("shape", [(1, 1, 24), (8, 1, 24), (3, 5, 24), (8, 24), (FEW_ROWS + 1, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_f_linear_up_to_rounding(shape, bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape)
    want = F.linear(x, layer.weight, layer.bias)
    with rows_first([layer]):
        got = layer(x)
    assert got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    if x.numel() // 24 > FEW_ROWS:
        assert torch.equal(got, want)  # many rows keep F.linear itself


def test_only_inside_the_block_and_restored_after_an_error():
    layer = torch.nn.Linear(4, 4)
    with pytest.raises(RuntimeError), rows_first([layer]):
        assert "forward" in layer.__dict__
        raise RuntimeError("a failed forward")
    assert "forward" not in layer.__dict__


def test_layers_picked_leave_out_subclasses_and_wrapped_forwards():
    class Quantized(torch.nn.Linear):
        pass

    plain, quantized, hooked = torch.nn.Linear(4, 4), Quantized(4, 4), torch.nn.Linear(4, 4)
    original = hooked.forward
    hooked.forward = lambda x: original(x) * 2  # as accelerate's offload hooks wrap a layer
    model = torch.nn.Sequential(plain, quantized, hooked)
    assert linears_on_cpu(model) == [plain]
    with rows_first(linears_on_cpu(model)):
        pass
    assert torch.equal(hooked(torch.ones(1, 4)), original(torch.ones(1, 4)) * 2)  # its wrapper survives
