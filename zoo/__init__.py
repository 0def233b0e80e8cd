"""Segmentation model zoo with pluggable decoders.

    import zoo
    model = zoo.create("pspnet", encoder="resnet50", upsample="pixelshuffle", num_classes=21)
    model = zoo.create("unet_resnet10t_camvid", pretrained=True)     # a trained entry
    zoo.list_models("fcn*")
    out = zoo.predict("runs/quickstart", "photo.jpg")   # .mask, .probabilities, .overlay
"""
__version__ = "0.1.0"

from zoo import hub  # noqa: E402,F401  (serves the trained entries to create / list_models; reads no file yet)
from zoo.registry import create, list_models  # noqa: E402


def load(source: str, **kwargs):
    """A model from a run folder, a published folder, its URL, an `hf-hub:` repository or an
    entry's name (see zoo.hub.load)."""
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
