"""Benchmark fixtures, and the machine facts the saved JSON carries for table.py."""

from __future__ import annotations

import pathlib

import pytest


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record torch, its thread count and the GPU beside pytest-benchmark's CPU facts."""
    import torch

    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()


@pytest.fixture(scope="session")
def torchvision_root(real_data, tmp_path_factory) -> pathlib.Path:
    """The real data in the folder layout torchvision's FashionMNIST reads (decompressed)."""
    from pipelines import torchvision_root as build

    return build(real_data, tmp_path_factory.mktemp("torchvision"))
