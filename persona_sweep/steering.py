"""One way to steer: add a vector to a module's output while a `with` block runs.

Both worlds use it: a transformers decoder layer (the residual stream after that layer, for
persona vectors and the `steer` method) and a TransformerLens hook point (the toy world's
belief steering). The hook is registered with torch and only that handle is removed, in
`finally`: hooks someone else put on the module stay, and an exception inside the block leaves
nothing of ours behind.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def added_to_output(module, vectors, position: int | None = None, rows=None):
    """Add `vectors` to `module`'s output: (width,) to every row, or (batch, width) one per row;
    at sequence `position`, or every position when None. `rows` (a boolean tensor over the
    batch) limits it to those rows. Outputs that are tuples (older decoder layers) are steered in
    their first element."""
    def add(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        added = vectors.to(hidden.dtype)
        added = added if added.ndim == 1 else added[:, None, :]
        if rows is not None:
            added = added * rows.to(hidden.dtype)[:, None, None]
        if position is None:
            hidden = hidden + added
        else:
            hidden = hidden.clone()
            hidden[:, position] += added if added.ndim == 1 else added[:, 0]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = module.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def decoder_layers(model):
    """The decoder blocks of a transformers causal LM, through a peft wrapper: block L's output
    is the residual stream a persona vector of layer L lives in."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"steering needs a decoder whose blocks are `model.layers` (Llama, Qwen, Mistral and kin), "
                         f"not {type(base).__name__}")
    return layers
