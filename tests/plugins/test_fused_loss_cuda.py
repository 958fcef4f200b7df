"""The fused loss on a GPU: the same numbers as on the CPU, no host synchronisation, capturable in a CUDA graph."""

from __future__ import annotations

import math

import pytest
import torch

from fmclf_plugins.fused_cross_entropy import fused_cross_entropy

pytestmark = pytest.mark.cuda
INF = math.inf


def both(logits, target, **kw):
    """Loss and gradient on the CPU and on the GPU."""
    out = []
    for device in ("cpu", "cuda"):
        x = logits.detach().to(device).requires_grad_()
        extra = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        loss = fused_cross_entropy(x, target.to(device), **extra)
        loss.sum().backward()
        out.append((loss.detach().cpu(), x.grad.cpu()))
    return out


@pytest.mark.parametrize("C", [5, 40, 1000])
@pytest.mark.parametrize(
    "kw", [{}, {"label_smoothing": 0.2}, {"ignore_index": 1}, {"weight": True}],
    ids=["plain", "smoothing", "ignore", "weight"]
)
def test_the_gpu_agrees_with_the_cpu(C, kw):
    g = torch.Generator().manual_seed(C)
    logits = torch.randn(33, C, generator=g, dtype=torch.float64) * 4
    logits[0, 0], logits[1, :] = INF, -INF  # the decided edge cases take the accelerator's branch-free path
    y = torch.randint(0, C, (33,), generator=g)
    if kw.get("weight"):
        kw = {"weight": torch.rand(C, generator=g, dtype=torch.float64) + 0.5}
    (cpu_loss, cpu_grad), (gpu_loss, gpu_grad) = both(logits, y, **kw)
    assert torch.allclose(gpu_loss, cpu_loss, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.allclose(gpu_grad, cpu_grad, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_probability_targets_on_the_gpu():
    logits = torch.randn(9, 50, dtype=torch.float64)
    q = torch.softmax(torch.randn(9, 50, dtype=torch.float64), dim=1)
    (cpu_loss, cpu_grad), (gpu_loss, gpu_grad) = both(logits, q, label_smoothing=0.1)
    assert torch.allclose(gpu_loss, cpu_loss, rtol=1e-12) and torch.allclose(gpu_grad, cpu_grad, rtol=1e-12, atol=1e-15)


def test_loss_and_backward_capture_in_a_cuda_graph():
    device = torch.device("cuda")
    x = torch.randn(64, 10, device=device, requires_grad=True)
    y = torch.randint(0, 10, (64,), device=device)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up, as CUDA graphs need
            x.grad = None
            fused_cross_entropy(x, y).sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):  # a host read inside the loss would fail here
        total = fused_cross_entropy(x, y).sum()
        total.backward()
    with torch.no_grad():
        x.copy_(torch.randn(64, 10, device=device) * 50)
    graph.replay()
    expected = torch.nn.functional.cross_entropy(x.detach().double(), y, reduction="sum")
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
