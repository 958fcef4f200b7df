"""The public Fashion-MNIST loader for data-set plugins: the built-in's files and checks, as tensors."""

from __future__ import annotations

import pytest
import torch

from fmclf.errors import DataError
from fmclf_plugins.fashion_mnist import CLASSES, load_fashion_mnist


def test_the_loader_gives_the_real_set_checked_with_where_it_came_from(real_data):
    t = load_fashion_mnist(real_data)
    assert t.train_images.shape == (60000, 28, 28) and t.train_images.dtype == torch.uint8
    assert t.test_images.shape == (10000, 28, 28) and t.test_labels.dtype == torch.int64
    assert torch.bincount(t.test_labels).tolist() == [1000] * 10 and t.classes == CLASSES
    assert str(real_data) in t.source
    t.test_images[0, 0, 0] = 255  # its own memory: writable, and no one else's
    assert load_fashion_mnist(real_data).test_images[0, 0, 0] == 0


def test_the_loader_refuses_files_that_are_not_fashion_mnist(tiny_data):
    with pytest.raises(DataError):
        load_fashion_mnist(tiny_data, download=False)  # verify: the tiny files are no Fashion-MNIST
    assert len(load_fashion_mnist(tiny_data, download=False, verify=False).train_labels) == 96
