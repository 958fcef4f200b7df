"""The MLP itself (imported only when a run builds the model).

A submodule must not share a factory's name: importing `fmclf_example.mlp`
would replace the function `mlp` on the package with the module.
"""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """Flatten, Linear(num_inputs, hidden), ReLU, Dropout, Linear(hidden, num_classes): logits.

    torch's default initialisation (Kaiming-uniform) is kept: with a hidden
    layer, the textbook's N(0, 0.01) weights train far more slowly.
    """

    def __init__(self, num_inputs: int, num_classes: int, *, hidden: int = 256, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Flatten(),
            nn.Linear(num_inputs, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
