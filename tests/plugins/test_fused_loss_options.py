"""The fused loss's options mean what torch's cross_entropy options mean, and its gradients are right."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fmclf.errors import OptionError
from fmclf.host.loading import load_plugins
from fmclf.host.options import options_of, resolve_options
from fmclf.run.plan import call_factory
from fmclf_plugins.fused_cross_entropy import FusedCrossEntropy, fused_cross_entropy, smoothing_for_soft_label

# C = 5 runs the exp-then-sum path, C = 40 the fused-softmax-kernel path
CLASSES = [5, 40]
OPTIONS = {
    "plain": {},
    "label_smoothing": {"label_smoothing": 0.2},
    "ignore_index": {"ignore_index": -100},
    "ignore_index_in_range": {"ignore_index": 1},
    "weight": {"weight": True},
    "weight+smoothing+ignore": {"weight": True, "label_smoothing": 0.3, "ignore_index": -100},
}


def make(C, N=7, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed + C)
    logits = (torch.randn(N, C, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    y = torch.randint(0, C, (N,), generator=g)
    y[2] = -100  # ignored where ignore_index is -100; an error elsewhere, so only used then
    y[3] = 1
    w = torch.rand(C, generator=g, dtype=torch.float64).to(dtype) + 0.5
    q = torch.softmax(torch.randn(N, C, generator=g, dtype=torch.float64) * 2, dim=1).to(dtype)
    return logits, y, w, q


def kwargs_for(name, w):
    kw = dict(OPTIONS[name])
    if kw.pop("weight", False):
        kw["weight"] = w
    return kw


def targets_for(name, y):
    return y if kw_ignores(name) else y.clamp(min=0)


def kw_ignores(name):
    return OPTIONS[name].get("ignore_index") == -100


def assert_same_as_torch(logits, target, **kw):
    """Values and gradients of fused and F.cross_entropy agree to float64 rounding."""
    ours = fused_cross_entropy(logits, target, **kw)
    theirs = F.cross_entropy(logits, target, reduction="none", **kw)
    assert torch.allclose(ours, theirs, rtol=1e-13, atol=1e-15)
    g1, = torch.autograd.grad(ours.sum(), logits)
    g2, = torch.autograd.grad(theirs.sum(), logits)
    assert torch.allclose(g1, g2, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("name", list(OPTIONS))
def test_class_targets_match_torch_values_and_gradients(name, C):
    logits, y, w, _ = make(C)
    assert_same_as_torch(logits, targets_for(name, y), **kwargs_for(name, w))


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("name", ["plain", "label_smoothing", "weight", "weight+smoothing+ignore"])
def test_probability_targets_match_torch(name, C):
    logits, _, w, q = make(C)
    assert_same_as_torch(logits, q, **{k: v for k, v in kwargs_for(name, w).items() if k != "ignore_index"})


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("name", list(OPTIONS))
def test_gradcheck_class_targets(name, C):
    logits, y, w, _ = make(C, N=4)
    kw, t = kwargs_for(name, w), targets_for(name, y[:4])
    assert torch.autograd.gradcheck(lambda x: fused_cross_entropy(x, t, **kw), (logits,))


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("name", ["plain", "label_smoothing", "weight+smoothing+ignore"])
def test_gradcheck_probability_targets(name, C):
    logits, _, w, q = make(C, N=4)
    kw = {k: v for k, v in kwargs_for(name, w).items() if k != "ignore_index"}
    assert torch.autograd.gradcheck(lambda x: fused_cross_entropy(x, q[:4], **kw), (logits,))


@pytest.mark.parametrize("C", CLASSES)
def test_gradcheck_soft_label(C):
    logits, y, _, _ = make(C, N=4)
    loss = FusedCrossEntropy(soft_label=0.9)
    assert torch.autograd.gradcheck(lambda x: loss(x, y[:4].clamp(min=0)), (logits,))


@pytest.mark.parametrize("C", [2, 10, 40])
def test_the_textbooks_soft_label_is_label_smoothing_c_over_c_minus_1(C):
    """0.9 on the label and the other 0.1 shared: the same loss three ways."""
    logits, y, _, _ = make(C)
    y = y.clamp(min=0)
    soft = torch.full((len(y), C), 0.1 / (C - 1), dtype=torch.float64)
    soft[torch.arange(len(y)), y] = 0.9
    by_option = FusedCrossEntropy(soft_label=0.9)(logits, y)
    by_smoothing = fused_cross_entropy(logits, y, label_smoothing=0.1 * C / (C - 1))
    by_target = fused_cross_entropy(logits, soft)
    assert torch.allclose(by_option, by_target, rtol=1e-13) and torch.allclose(by_smoothing, by_target, rtol=1e-13)
    assert smoothing_for_soft_label(0.9, 10) == pytest.approx(1 / 9)


def test_ignored_rows_cost_nothing_and_get_no_gradient():
    logits, y, _, _ = make(5)
    loss = fused_cross_entropy(logits, y)  # y[2] == -100
    loss.sum().backward()
    assert loss[2] == 0 and torch.count_nonzero(logits.grad[2]) == 0
    assert torch.count_nonzero(logits.grad[[0, 1, 3]]) > 0


def test_a_weighted_class_scales_its_rows():
    logits, y, _, _ = make(5)
    y = y.clamp(min=0)
    w = torch.ones(5, dtype=torch.float64)
    w[y[0]] = 3.0
    plain, weighted = fused_cross_entropy(logits, y), fused_cross_entropy(logits, y, weight=w)
    assert torch.allclose(weighted, torch.where(y == y[0], 3.0 * plain, plain))


# -- errors a user sees ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits", "y", "message"),
    [
        (torch.zeros(3, 4), torch.tensor([0, 4, 1]), "target 4 (example 1) is not a class index"),
        (torch.zeros(3, 4), torch.tensor([0, -1, 1]), "target -1 (example 1) is not a class index"),
        (torch.zeros(3, 4), torch.tensor([0, 1]), "class-index targets must have shape (3,)"),
        (torch.zeros(3, 4), torch.zeros(3, 5), "probability targets must have the logits' shape (3, 4)"),
        (torch.zeros(3, 0), torch.zeros(3, dtype=torch.long), "0 classes"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long), "floating-point (N, C)"),
    ],
)
def test_bad_input_is_a_clear_error(logits, y, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fused_cross_entropy(logits, y)


# -- the component and its options ----------------------------------------------------


@pytest.fixture(scope="module")
def record():
    return load_plugins(autoload=False).registry.get("loss", "fused")


def build(record, **given):
    return call_factory(record, {}, resolve_options(record, given))


def test_options_are_listed_with_their_help(record):
    options = {o.name: o for o in options_of(record)}
    assert set(options) == {"label_smoothing", "soft_label", "ignore_index", "weight"}
    assert all(o.help for o in options.values())
    assert "0.9" in options["soft_label"].help and "(1 - p) * C / (C - 1)" in options["soft_label"].help


def test_options_from_the_command_line_work(record):
    loss = build(record, label_smoothing="0.1", weight="1,2,1", ignore_index="0")
    logits, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    expected = F.cross_entropy(logits, y, weight=torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64), ignore_index=0,
                               label_smoothing=0.1, reduction="none")
    assert torch.allclose(loss(logits, y), expected, rtol=1e-13)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        # the bounds the factory declares (fmclf.Range) are checked by the option parser, in its words
        ({"label_smoothing": "1.5"}, r"1.5 is not in \[0, 1\]"),
        ({"soft_label": "-0.1"}, r"-0.1 is not in \[0, 1\]"),
        ({"soft_label": "0.9", "label_smoothing": "0.1"}, "give one"),
        ({"weight": "1,-2"}, "-2 is not >= 0"),
        ({"weight": "1,nan"}, "nan is not a number this option can take"),
    ],
)
def test_bad_options_are_refused_when_built(record, given, message):
    with pytest.raises(OptionError, match=message):
        build(record, **given)


def test_a_weight_per_class_is_checked_against_the_model(record):
    loss = build(record, weight="1,2")
    with pytest.raises(OptionError, match="has 2 entries but the model has 3 classes"):
        loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(("values", "message"), [
    ({"label_smoothing": 1.5}, "between 0 and 1"), ({"soft_label": -0.1}, "between 0 and 1"),
    ({"weight": [1.0, -2.0]}, "finite weights >= 0"), ({"weight": [1.0, float("nan")]}, "finite weights >= 0"),
])
def test_the_factory_called_directly_checks_its_own_options(record, values, message):
    """Python callers bypass the option parser; the factory's own check (fmclf.checks) still refuses."""
    options = {**{o.name: o.default for o in options_of(record)}, **values}
    with pytest.raises(OptionError, match=message):
        call_factory(record, {"num_classes": 3}, options)
