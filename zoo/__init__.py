"""Segmentation model zoo with pluggable decoders.

    import zoo
    model = zoo.create("pspnet", encoder="resnet50", upsample="pixelshuffle", num_classes=21)
    zoo.list_models("fcn*")
    out = zoo.predict("runs/quickstart", "photo.jpg")   # .mask, .probabilities, .overlay
"""
from zoo.registry import create, list_models

__version__ = "0.1.0"


def load(source: str, **kwargs):
    """A model from a run folder, a published folder or its URL (see zoo.hub.load)."""
    from zoo import hub
    return hub.load(source, **kwargs)


def predict(source, image, **kwargs):
    """Mask, probabilities and overlay of one image (a path, an array or a PIL image) by a
    model from a run folder, a published folder, an entry's name or a model object,
    read as its evaluation read images (see zoo.infer)."""
    from zoo.infer import predict as _predict
    return _predict(source, image, **kwargs)


def __getattr__(name):
    if name == "Predictor":  # imported on first use: it pulls in albumentations
        from zoo.infer import Predictor
        return Predictor
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = ["create", "list_models", "load", "predict", "Predictor", "__version__"]
