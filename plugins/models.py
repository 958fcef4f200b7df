"""Models: softmax regression written out by hand (``scratch``) and with ``torch.nn`` (``nn``).

Both return logits; the softmax belongs to the loss.
"""

from __future__ import annotations

import fmclf


@fmclf.hookimpl
def register_models(register):
    register("scratch", scratch, help="softmax regression by hand: explicit W (inputs x classes) ~ N(0, 0.01), b = 0, "
                                      "X @ W + b")
    register("nn", nn_linear, help="softmax regression with torch.nn: Flatten + Linear, weights ~ N(0, 0.01)")


def _stacked_scratch(params, buffers, X):
    """``scratch``'s members in one matrix product (torch is imported only when a group trains)."""
    from .softmax import stacked_scratch

    return stacked_scratch(params, buffers, X)


def _stacked_nn(params, buffers, X):
    """``nn``'s members in one matrix product."""
    from .softmax import stacked_nn

    return stacked_nn(params, buffers, X)


@fmclf.batchable(stacked=_stacked_scratch)  # one product 10·K columns wide, not K products 10 wide
def scratch(*, num_inputs: int, num_classes: int):
    """Softmax regression from scratch (d2l 3.6): parameters W and b, a hand-written matmul."""
    from .softmax import SoftmaxScratch

    return SoftmaxScratch(num_inputs, num_classes)


@fmclf.batchable(stacked=_stacked_nn)
def nn_linear(*, num_inputs: int, num_classes: int):
    """Softmax regression with nn (d2l 3.7): nn.Flatten then nn.Linear."""
    from .softmax import softmax_nn

    return softmax_nn(num_inputs, num_classes)
