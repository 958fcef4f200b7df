"""Device resolution: every spelling, and a clear error for what is not there."""

from __future__ import annotations

import pytest
import torch

from fmclf.errors import DeviceError
from fmclf.run.devices import available_devices, check_spec, resolve_device


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    assert "cpu" in available_devices()


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "auto:1", "", "cuda:-1", "tpu"])
def test_malformed_specs_are_refused_without_torch(spec):
    with pytest.raises(DeviceError, match="Use auto"):
        check_spec(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the error path needs one without")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_names_what_is_available(spec):
    with pytest.raises(DeviceError) as info:
        resolve_device(spec)
    message = str(info.value)
    assert f"device '{spec}' is not available" in message
    assert "Available: cpu" in message and "--device cpu" in message


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_apple_silicon():
    with pytest.raises(DeviceError, match="'mps' is not available.*Available: cpu"):
        resolve_device("mps")


@pytest.mark.cuda
def test_cuda_index_past_the_last_gpu():
    n = torch.cuda.device_count()
    with pytest.raises(DeviceError, match=f"has {n} CUDA device"):
        resolve_device(f"cuda:{n}")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
