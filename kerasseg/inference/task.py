"""What kind of segmentation a model does, read from the model itself."""

__all__ = ["INSTANCE_OUTPUTS", "task_of"]

# The outputs every instance model (Mask R-CNN) returns, among others.
INSTANCE_OUTPUTS = ("boxes", "masks", "num_detections")


def task_of(model):
    """ "instance" for a model whose outputs are a dict of detections, else "semantic".

    Args:
        model: a `keras.Model` (or anything with an `output` attribute).

    Returns:
        "instance" when the model's outputs include `INSTANCE_OUTPUTS` (Mask R-CNN), else
        "semantic" (dense per-pixel outputs, classical models included).
    """
    output = getattr(model, "output", None)
    if isinstance(output, dict) and set(INSTANCE_OUTPUTS) <= set(output):
        return "instance"
    return "semantic"
