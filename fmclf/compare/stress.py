"""The stress grid for losses: hard logits, an exact reference, and how far a loss is from it.

Each :class:`Case` builds logits and class targets in a dtype (huge shifts,
ties at the largest float, logits past ``exp``'s overflow, a target far below
the maximum, ...). A loss is run on every case and dtype of :data:`CASES`
(:func:`grid`) and compared with a float64 reference:

- its own ``reference`` attribute when it has one: a function ``(logits, y)``
  of float64 logits that returns the per-example loss (its gradient is then
  taken by autograd in float64), or ``(loss, grad)``;
- otherwise, for a loss of the cross-entropy family (one that agrees with
  cross-entropy to 1e-6 on moderate float64 logits), :func:`reference`;
- otherwise none: only whether its loss and gradient stay finite is measured.

The cross-entropy reference is computed in float64 from the logits *as
stored* in their dtype (exact for float32, float16 and bfloat16 inputs to
about 1e-16) by the shifted formula with every step in float64; for float64
inputs it is a float64 computation (a few ulps), checked against mpmath in
the tests. Errors are given relative to the reference and in units in the
last place (ulps) of the dtype the loss returns.

Importing this module imports no torch (the pytest plugin lists the cases
without it); every function that computes imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ComponentError
from ..train.blame import blame

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")

#: The tolerance of the proof: fused's error may exceed torch's by at most this
#: many units in the last place of the dtype fused computes in (float32 for the
#: 16-bit dtypes), plus, for the gradient, one rounding to the logits' dtype.
TOLERANCE_ULPS = 16

#: How closely a loss without a ``reference`` must agree with cross-entropy on
#: moderate float64 logits to be measured against it.
FAMILY_TOLERANCE = 1e-6

REFERENCE_OWN, REFERENCE_CROSS_ENTROPY, REFERENCE_NONE = "own", "cross-entropy", "none"


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype named ``name`` ("float32", ...)."""
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; the grid uses {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def exp_overflow(name: str) -> float:
    """Where exp overflows in dtype ``name`` (ln of its largest finite value)."""
    import torch

    return math.log(torch.finfo(dtype_of(name)).max)


def compute_eps(dtype: torch.dtype) -> float:
    """Machine epsilon of the dtype a cross-entropy computes in for ``dtype`` (float32 for 16-bit logits)."""
    import torch

    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def tolerance(dtype: torch.dtype, what: str) -> float:
    """The stated tolerance for ``what`` ("loss" or "grad") in ``dtype``, relative."""
    import torch

    tol = TOLERANCE_ULPS * compute_eps(dtype)
    if what == "grad" and dtype in (torch.float16, torch.bfloat16):
        tol += torch.finfo(dtype).eps  # the gradient is returned in the logits' dtype
    return tol


# -- the reference ------------------------------------------------------------------


def cross_entropy_reference(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (float64) per-row cross-entropy and its gradient ``softmax - onehot`` for
    class targets ``y`` and logits whose row maxima are finite."""
    import torch

    o = logits.detach().double().cpu()
    y = y.cpu()
    m = o.amax(dim=1, keepdim=True)
    z = o - m  # exact: the inputs have at most 53 significant bits
    k = z.argmax(dim=1, keepdim=True)
    e = torch.exp(z)
    e.scatter_(1, k, 0.0)  # leave out the maximum's own 1, so log1p sees the rest exactly
    s1 = e.sum(dim=1, keepdim=True)
    L = torch.log1p(s1)
    zy = z.gather(1, y.unsqueeze(1))
    loss = (L - zy).squeeze(1)
    p = torch.exp(z - L)
    others = p.scatter(1, y.unsqueeze(1), 0.0).sum(dim=1, keepdim=True)  # 1 - p_y, no cancellation
    grad = p.scatter(1, y.unsqueeze(1), -others)
    return loss, grad


def mp_reference_loss(logits: torch.Tensor, y: torch.Tensor, digits: int = 40) -> list[float]:
    """The same loss in mpmath with ``digits`` significant digits (slow; small inputs)."""
    import mpmath

    with mpmath.workdps(digits):
        out = []
        for row, t in zip(logits.detach().double().tolist(), y.tolist(), strict=True):
            m = max(row)
            total = mpmath.fsum(mpmath.exp(mpmath.mpf(v) - m) for v in row)
            out.append(float(mpmath.log(total) - (mpmath.mpf(row[t]) - m)))
        return out


def own_reference(fn: Callable) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A loss's ``reference`` as a ``(loss, grad)`` function: called on float64 logits;
    the gradient by autograd unless it returns ``(loss, grad)`` itself."""

    def ref(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x = logits.detach().double().cpu().requires_grad_(True)
        out = fn(x, y.cpu())
        if isinstance(out, tuple):
            return out[0].detach().double(), out[1].detach().double()
        (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        return out.detach().double(), torch.zeros_like(x) if grad is None else grad.double()

    return ref


def relative_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest elementwise ``|value - ref| / |ref|`` (absolute where ref is 0);
    0 where both are the same infinity, inf where only one is non-finite or value is nan."""
    import torch

    v, r = value.detach().double().cpu(), ref.double()
    both_inf = torch.isinf(v) & torch.isinf(r) & (torch.sign(v) == torch.sign(r))
    bad = (~torch.isfinite(v) | ~torch.isfinite(r)) & ~both_inf
    if bool(bad.any()):
        return math.inf
    diff = torch.where(both_inf, 0.0, (v - r).abs())
    scale = torch.where(r == 0, 1.0, r.abs())
    return float((diff / scale).max()) if v.numel() else 0.0


def gradient_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest row-wise ``max|value - ref| / max|ref|``: each row's error relative
    to that row's largest entry (a confident row's whole gradient is tiny)."""
    import torch

    v, r = value.detach().double().cpu(), ref.double()
    if not v.numel():
        return 0.0
    if not bool(torch.isfinite(v).all()):
        return math.inf
    scale = r.abs().amax(dim=1)
    scale = torch.where(scale == 0, 1.0, scale)
    return float(((v - r).abs().amax(dim=1) / scale).max())


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of ``dtype``'s numbers at each ``|x|`` (float64; subnormal spacing below the normal range)."""
    import torch

    info = torch.finfo(dtype)
    a = x.double().abs().clamp_min(info.tiny)
    return torch.exp2(torch.floor(torch.log2(a))) * info.eps


def loss_ulps(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest ``|value - ref|`` in ulps of ``value``'s dtype at ``ref``; 0 where both are
    the same infinity, inf where only one is non-finite."""
    import torch

    v, r = value.detach().double().cpu(), ref.double()
    if not v.numel():
        return 0.0
    both_inf = torch.isinf(v) & torch.isinf(r) & (torch.sign(v) == torch.sign(r))
    if bool(((~torch.isfinite(v) | ~torch.isfinite(r)) & ~both_inf).any()):
        return math.inf
    diff = torch.where(both_inf, 0.0, (v - r).abs())
    return float((diff / ulp(torch.where(both_inf, 1.0, r), value.dtype)).max())


def gradient_ulps(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest row-wise ``max|value - ref|`` in ulps of ``value``'s dtype at that row's largest reference entry."""
    import torch

    v, r = value.detach().double().cpu(), ref.double()
    if not v.numel():
        return 0.0
    if not bool(torch.isfinite(v).all()):
        return math.inf
    return float(((v - r).abs().amax(dim=1) / ulp(r.abs().amax(dim=1), value.dtype)).max())


def run(loss: Callable, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss and gradient of ``loss`` (summed) with respect to a leaf copy of ``logits``;
    the gradient is None when backward fails (the naive loss on some inputs)."""
    x = logits.detach().clone().requires_grad_(True)
    value = loss(x, y)
    try:
        value.sum().backward()
    except RuntimeError:
        return value.detach(), None
    return value.detach(), x.grad


# -- the stress cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One stress case: how to build its logits and targets in a dtype."""

    name: str  #: short id, used in test ids and the tables
    what: str  #: one line for the table
    build: Callable[[Any, Any], tuple[Any, Any]]  #: (dtype, generator) -> (logits, targets)
    dtypes: tuple[str, ...] = DTYPE_NAMES
    classes: int = 10
    rows: int = 37  #: not a power of two on purpose

    def make(self, dtype: str, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The case's logits (in ``dtype``) and class targets, the same on every run."""
        import torch

        g = torch.Generator().manual_seed(hash_name(self.name))
        logits, y = self.build(dtype_of(dtype), g)
        return logits.to(device), y.to(device)


def hash_name(name: str) -> int:
    """A stable seed from a case name (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def _normal(C: int, N: int, scale: float = 3.0, shift: float = 0.0):
    def build(dtype, g):
        import torch

        o = torch.randn(N, C, generator=g, dtype=torch.float64) * scale + shift
        return o.to(dtype), torch.randint(0, C, (N,), generator=g)

    return build


def _ties(sign: float, C: int = 10, N: int = 37):
    """Every logit the same huge value: 3e38 (float16: 6e4) times ``sign``; the loss is ln C."""

    def build(dtype, g):
        import torch

        value = sign * (6e4 if dtype == torch.float16 else 3e38)
        return torch.full((N, C), value, dtype=dtype), torch.randint(0, C, (N,), generator=g)

    return build


def _past_overflow(C: int = 10, N: int = 37):
    def build(dtype, g):
        import torch

        edge = exp_overflow(str(dtype).removeprefix("torch."))
        o = edge + 0.5 + torch.rand(N, C, generator=g, dtype=torch.float64) * edge * 0.2
        return o.to(dtype), torch.randint(0, C, (N,), generator=g)

    return build


def _target_far_below(gap: float = 120.0, C: int = 10, N: int = 37):
    """The target's logit ``gap`` below the row's maximum; the other classes at or
    below the target, so the true loss is gap plus a little."""

    def build(dtype, g):
        import torch

        y = torch.randint(0, C, (N,), generator=g)
        o = -torch.rand(N, C, generator=g, dtype=torch.float64) * 30.0
        o[torch.arange(N), y] = 0.0
        top = (y + 1 + torch.randint(0, C - 1, (N,), generator=g)) % C
        o[torch.arange(N), top] = gap
        return o.to(dtype), y

    return build


def _confident(margin: float = 20.0, C: int = 10, N: int = 37):
    """The target ``margin`` above every other class: the loss is about (C - 1) e^-margin."""

    def build(dtype, g):
        import torch

        y = torch.randint(0, C, (N,), generator=g)
        o = torch.rand(N, C, generator=g, dtype=torch.float64) * 2.0
        o[torch.arange(N), y] = margin + 2.0
        return o.to(dtype), y

    return build


def _neg_inf_others(C: int = 10, N: int = 37):
    """Half of the non-target classes at -inf (masked out)."""

    def build(dtype, g):
        import torch

        o = torch.randn(N, C, generator=g, dtype=torch.float64) * 3.0
        y = torch.randint(0, C, (N,), generator=g)
        mask = torch.rand(N, C, generator=g) < 0.5
        mask[torch.arange(N), y] = False
        o[mask] = -math.inf
        return o.to(dtype), y

    return build


F32_WIDE = ("float32", "float64", "bfloat16")  # dtypes that hold 1e8, 1e30 and 3e38

CASES: tuple[Case, ...] = (
    Case("normal-C1", "C = 1 (one class: loss 0)", _normal(1, 37), classes=1),
    Case("normal-C2", "C = 2, logits N(0, 3^2)", _normal(2, 37), classes=2),
    Case("normal-C10", "C = 10, logits N(0, 3^2)", _normal(10, 37)),
    Case("normal-C1000", "C = 1000, logits N(0, 3^2)", _normal(1000, 37), classes=1000),
    Case("normal-C32000", "C = 32000, logits N(0, 3^2)", _normal(32000, 5), classes=32000, rows=5),
    Case("shift-1e4", "every logit + 1e4", _normal(10, 37, shift=1e4)),
    Case("shift-1e4-C1000", "every logit + 1e4, C = 1000", _normal(1000, 37, shift=1e4), classes=1000),
    Case("shift-1e8", "every logit + 1e8", _normal(10, 37, shift=1e8), dtypes=F32_WIDE),
    Case("shift-1e30", "every logit + 1e30", _normal(10, 37, shift=1e30), dtypes=F32_WIDE),
    Case("tie-max", "all logits equal, +3e38 (float16: +6e4): loss ln C", _ties(1.0)),
    Case("tie-min", "all logits equal, -3e38 (float16: -6e4): loss ln C", _ties(-1.0)),
    Case("overflow", "every logit past exp's overflow (88.7; float16 11.1; float64 709.8)", _past_overflow()),
    Case("target-120-below", "target 120 below the row's maximum: loss 120", _target_far_below()),
    Case("confident", "target 20 above the rest: loss ~ 1.9e-8", _confident()),
    Case("neg-inf-others", "half of the non-target logits -inf", _neg_inf_others()),
)

#: The forward + backward shapes ``fmclf bench loss`` times (``--shapes`` adds more).
SPEED_SHAPES: tuple[tuple[int, int], ...] = ((256, 10), (4096, 10), (4096, 1000))


def grid() -> list[tuple[Case, str]]:
    """Every (case, dtype) pair the proof and the tables cover."""
    return [(case, dtype) for case in CASES for dtype in case.dtypes]


def speed_inputs(N: int, C: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits N(0, 3^2) of shape N x C and targets for timing, the same on every run."""
    import torch

    g = torch.Generator().manual_seed(N + C)
    return torch.randn(N, C, generator=g).mul_(3.0).to(device), torch.randint(0, C, (N,), generator=g).to(device)


def step(loss: Callable, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward and backward of ``loss`` at ``x`` (a leaf that requires grad), as a training step does them."""
    x.grad = None
    loss(x, y).sum().backward()


# -- measuring a loss -----------------------------------------------------------------


@dataclass
class CaseResult:
    """One loss on one case in one dtype.

    ``loss_inf``/``loss_nan`` count rows, ``grad_inf``/``grad_nan`` entries
    (``grad_failed``: backward raised). Errors are against the reference named
    by ``reference`` and are None without one, or where the loss is not finite.
    """

    case: str
    dtype: str
    what: str
    rows: int
    classes: int
    reference: str  #: "own", "cross-entropy" or "none" (finiteness only)
    loss_inf: int = 0
    loss_nan: int = 0
    grad_inf: int = 0
    grad_nan: int = 0
    grad_failed: bool = False
    loss_ulps: float | None = None
    grad_ulps: float | None = None
    loss_error: float | None = None  #: relative
    grad_error: float | None = None  #: relative, row by row
    error: str | None = None  #: the loss raised: "TypeError: ..."
    reference_finite: bool = True  #: False: the reference itself is inf or nan here, so no error is measured

    @property
    def loss_finite(self) -> bool:
        return self.error is None and not (self.loss_inf or self.loss_nan)

    @property
    def grad_finite(self) -> bool:
        return self.error is None and not (self.grad_inf or self.grad_nan or self.grad_failed)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``fmclf bench loss --json``): non-finite errors as the strings "inf"/"nan"."""
        out = asdict(self)
        for key in ("loss_ulps", "grad_ulps", "loss_error", "grad_error"):
            if isinstance(out[key], float) and not math.isfinite(out[key]):
                out[key] = str(out[key])
        return out


Reference = Callable[[Any, Any], tuple[Any, Any]]


def choose_reference(loss: Callable, reference: Callable | None = None) -> tuple[str, Reference | None]:
    """The reference a loss is measured against: ``reference`` or the loss's own
    ``reference`` attribute; else cross-entropy's when the loss agrees with it on
    moderate float64 logits; else none."""
    own = reference if reference is not None else getattr(loss, "reference", None)
    if callable(own):
        return REFERENCE_OWN, own_reference(own)
    return (REFERENCE_CROSS_ENTROPY, cross_entropy_reference) if is_cross_entropy(loss) else (REFERENCE_NONE, None)


def is_cross_entropy(loss: Callable) -> bool:
    """Whether ``loss`` computes cross-entropy: within :data:`FAMILY_TOLERANCE` of it on
    moderate float64 logits, with 2, 10 and 1000 classes."""
    import torch

    for C in (2, 10, 1000):
        g = torch.Generator().manual_seed(C)
        logits = torch.randn(16, C, generator=g, dtype=torch.float64) * 2.0
        y = torch.randint(0, C, (16,), generator=g)
        try:
            with torch.no_grad():
                value = loss(logits, y)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (16,):
                return False
            if relative_error(value, cross_entropy_reference(logits, y)[0]) > FAMILY_TOLERANCE:
                return False
        except Exception:  # a loss that cannot take these inputs is measured for finiteness only
            return False  # (a BaseException, a stray sys.exit, passes: the caller's blame names the loss)
    return True


def measure(case: Case, dtype: str, loss: Callable, reference: Reference | None = None, *, kind: str | None = None,
            device: Any = "cpu", who: str = "the loss") -> CaseResult:
    """Run ``loss`` on one case: its loss and gradient against ``reference`` (a
    ``(logits, y) -> (loss, grad)`` float64 function; None: finiteness only), and
    how many of its values went inf or nan. ``kind`` names the reference in the result, ``who`` the loss in
    errors: a result of the wrong shape and a reference that raises or returns the wrong shapes end the
    measuring, blamed by name (and a BaseException from the loss, a stray ``sys.exit``, passes to the caller's
    :class:`~fmclf.train.blame.blame`)."""
    import torch

    logits, y = case.make(dtype, device)
    result = CaseResult(case.name, dtype, case.what, int(y.numel()), case.classes,
                        kind or (REFERENCE_NONE if reference is None else REFERENCE_OWN))
    try:
        value, grad = run(loss, logits, y)
    except Exception as exc:  # one case's failure is that case's result (a BaseException ends it: see stress)
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    if not isinstance(value, torch.Tensor):
        result.error = f"returned {type(value).__name__}, not a tensor"
        return result
    from ..train.engine import loss_shape_problem

    problem = loss_shape_problem(value, int(y.shape[0]))
    if problem:  # as `fmclf run` refuses it: rows of such a result are no per-example losses
        raise ComponentError(f"{who} {problem} `fmclf run` refuses such a loss, so it is not benched either.")
    value = value.detach()
    flat = value.reshape(value.shape[0], -1) if value.ndim else value.reshape(1, 1)
    result.loss_inf = int(torch.isinf(flat).any(dim=1).sum())
    result.loss_nan = int(torch.isnan(flat).any(dim=1).sum())
    if grad is None:
        result.grad_failed = True
    else:
        result.grad_inf, result.grad_nan = int(torch.isinf(grad).sum()), int(torch.isnan(grad).sum())
    if reference is None:
        return result
    with blame(f"the reference of {who}", f"on stress case {case.name!r} ({dtype})"):
        ref_loss, ref_grad = reference(logits, y)
    problem = reference_problem(ref_loss, ref_grad, tuple(logits.shape))
    if problem:
        raise ComponentError(f"the reference of {who} {problem}")
    finite_ref = bool(torch.isfinite(ref_loss).all())
    result.reference_finite = finite_ref and bool(torch.isfinite(ref_grad).all())
    if result.loss_finite and finite_ref and value.shape == ref_loss.shape:
        result.loss_error = relative_error(value, ref_loss)
        result.loss_ulps = loss_ulps(value, ref_loss)
    if grad is not None and result.grad_finite and bool(torch.isfinite(ref_grad).all()):
        result.grad_error = gradient_error(grad, ref_grad)
        result.grad_ulps = gradient_ulps(grad, ref_grad)
    return result


def reference_problem(ref_loss: Any, ref_grad: Any, shape: tuple[int, int]) -> str | None:
    """What is malformed in a reference's ``(loss, grad)`` for logits of ``shape`` (N, C), or None."""
    got_loss, got_grad = tuple(getattr(ref_loss, "shape", ())), tuple(getattr(ref_grad, "shape", ()))
    if got_loss == shape[:1] and got_grad == shape:
        return None
    return (f"is malformed: for logits of shape {shape} it returned a loss of shape {got_loss} and a gradient of "
            f"shape {got_grad}, where a reference returns one loss per row, shape {shape[:1]} (and the gradient "
            f"with the logits' shape), so no error against it would mean anything. Fix the loss's `reference`.")


def stress(loss: Callable | Callable[[int], Callable], reference: Callable | None = None, *, per_classes: bool = False,
           cases: list[tuple[Case, str]] | None = None, device: Any = "cpu", who: str = "the loss") -> list[CaseResult]:
    """Every case of the grid (or ``cases``) for one loss. With ``per_classes``,
    ``loss`` is called with each case's class count to build the loss for it.

    Runs on one CPU thread: the cases are tiny, and on a busy machine several
    threads only wait for each other (25 times slower on a loaded 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _stress(loss, reference, per_classes, cases, device, who)
    finally:
        torch.set_num_threads(threads)


def _stress(loss: Callable, reference: Callable | None, per_classes: bool, cases: list[tuple[Case, str]] | None,
            device: Any, who: str = "the loss") -> list[CaseResult]:
    built: dict[int, Callable] = {}

    def for_classes(C: int) -> Callable:
        if not per_classes:
            return loss
        if C not in built:
            built[C] = loss(C)
        return built[C]

    kinds: dict[int, tuple[str, Reference | None]] = {}
    out = []
    for case, dtype in cases or grid():
        try:
            fn = for_classes(case.classes)
        except Exception as exc:  # a BaseException passes: run_bench's blame names the loss
            out.append(CaseResult(case.name, dtype, case.what, case.rows, case.classes, REFERENCE_NONE,
                                  error=f"{type(exc).__name__}: {exc}"))
            continue
        key = id(fn)
        if key not in kinds:
            kinds[key] = choose_reference(fn, reference)
        kind, ref = kinds[key]
        out.append(measure(case, dtype, fn, ref, kind=kind, device=device, who=who))
    return out
