"""The hooks a plugin may implement, one per kind of component (:mod:`fmclf.kinds`).

Each hook is called once, with ``register``: call ``register(name, factory, *, help=None)`` for every component the
plugin provides; any other keyword fails the hook, naming the plugin. Factories are called only when a run uses the
component, so keep heavy imports (torch) inside them.
"""

import pluggy

hookspec = pluggy.HookspecMarker("fmclf")
hookimpl = pluggy.HookimplMarker("fmclf")


@hookspec
def register_datasets(register):
    """Register data sets: ``factory(*, batch_size, device, **options)`` returns an object with ``train``,
    ``test``, ``classes`` and ``input_shape``."""


@hookspec
def register_models(register):
    """Register models: ``factory(*, num_inputs, num_classes, **options)`` returns a ``torch.nn.Module`` that maps
    a batch to logits ``(N, num_classes)``."""


@hookspec
def register_losses(register):
    """Register losses: ``factory(**options)`` (plus ``num_classes`` if it asks) returns a callable
    ``(logits, y) -> per-example loss`` of shape ``(N,)``."""


@hookspec
def register_updaters(register):
    """Register updaters: ``factory(*, params, lr, **options)`` (plus ``epochs`` and ``steps_per_epoch``, the
    run's length, if it asks) returns an object with ``zero_grad()`` and ``step(batch_size)``, a
    ``torch.optim.Optimizer``, or ``(optimizer, scheduler)`` with a torch LR scheduler, stepped once per batch."""


@hookspec
def register_metrics(register):
    """Register metrics: ``factory(**options)`` (plus ``num_classes``, and ``loss``, the run's loss, if it asks)
    returns an object with ``update(logits, y)``, ``compute()`` (a number, or a dict of numbers) and ``reset()``;
    a ``torchmetrics.Metric`` fits as it is. ``--metric NAME`` records it after each epoch as ``valid_NAME`` and
    ``test_NAME``."""


@hookspec
def register_visualizers(register):
    """Register visualizers: ``factory(*, run_dir, **options)`` returns an object with any of ``on_fit_start``,
    ``on_batch_end``, ``on_epoch_end``, ``on_fit_end``, ``on_exception`` (see :mod:`fmclf.events`). A visualizer
    shows; it does not steer."""


@hookspec
def register_callbacks(register):
    """Register callbacks: ``factory(*, run_dir, **options)`` returns an object with any of the event methods of
    a visualizer; it may end the run through ``event.control.stop(reason)`` and change the learning rate through
    ``event.control.set_lr(value)`` / ``scale_lr(factor)``, and its ``state_dict()`` / ``load_state_dict()``, if it
    has them, are kept in the checkpoint."""
