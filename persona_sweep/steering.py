"""One way to steer: change a module's output while a `with` block runs (`output_changed`):
add a vector (`added_to_output`) or hold its projection on a direction at a floor (`capped_at`,
seed 002's activation capping).

Both worlds use it: a transformers decoder layer (the residual stream after that layer, for
persona vectors and the `steer` method) and a TransformerLens hook point (the toy world's
belief steering). The hook is registered with torch and only that handle is removed, in
`finally`: hooks someone else put on the module stay, and an exception inside the block leaves
nothing of ours behind.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def output_changed(module, change):
    """`change(hidden) -> hidden` on `module`'s output while the block runs. Outputs that are
    tuples (older decoder layers) are changed in their first element. The hook runs before the
    module's other forward hooks (`prepend`): transformers records `output_hidden_states` with
    hooks of its own, installed at the first forward pass, and they must see the changed output."""
    def hook(_module, _inputs, output):
        hidden = change(output[0] if isinstance(output, tuple) else output)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = module.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def added_to_output(module, vectors, position: int | None = None, rows=None):
    """Add `vectors` to `module`'s output: (width,) to every row, or (batch, width) one per row;
    at sequence `position`, or every position when None. `rows` (a boolean tensor over the
    batch) limits it to those rows."""
    def add(hidden):
        added = vectors.to(hidden.dtype)
        added = added if added.ndim == 1 else added[:, None, :]
        if rows is not None:
            added = added * rows.to(hidden.dtype)[:, None, None]
        if position is None:
            return hidden + added
        hidden = hidden.clone()
        hidden[:, position] += added if added.ndim == 1 else added[:, 0]
        return hidden
    return output_changed(module, add)


def capped_at(module, unit, floor: float):
    """Raise the projection of every position of `module`'s output on `unit` (a unit vector) to
    at least `floor`, moving along `unit` only; positions already above it are left alone."""
    def cap(hidden):
        direction = unit.to(hidden.dtype)
        lift = (floor - hidden @ direction).clamp(min=0)
        return hidden + lift[..., None] * direction
    return output_changed(module, cap)


def decoder_layers(model):
    """The decoder blocks of a transformers causal LM, through a peft wrapper: block L's output
    is the residual stream a persona vector of layer L lives in."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"steering needs a decoder whose blocks are `model.layers` (Llama, Qwen, Mistral and kin), "
                         f"not {type(base).__name__}")
    return layers
