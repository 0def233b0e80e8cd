"""Segmentation model zoo with pluggable decoders.

    import zoo
    model = zoo.create("pspnet", encoder="resnet50", upsample="pixelshuffle", num_classes=21)
    model = zoo.create("unet_resnet10t_camvid", pretrained=True)     # a trained entry
    model = zoo.create("unet_resnet10t_camvid", num_classes=5, init_from="runs/stage1")  # a run's weights
    zoo.list_models("fcn*")
    out = zoo.predict("runs/quickstart", "photo.jpg")   # .mask, .probabilities, .overlay
"""
import zoo.hub.load  # noqa: E402  (zoo.load; reads no file yet)
from zoo.common.version import __version__
from zoo.factory import create, list_models  # noqa: E402


def load(source: str, **kwargs):
    """A model from a run folder, a published folder, its URL, an `hf-hub:` repository or an
    entry's name (see zoo.hub.load.load)."""
    return zoo.hub.load.load(source, **kwargs)


def predict(source, image, **kwargs):
    """Mask, probabilities and overlay of one image (a path, an array or a PIL image) by a
    model from a run folder, a published folder, an entry's name or a model object,
    read as its evaluation read images (see zoo.inference.predict)."""
    from zoo.inference.predict import predict as _predict  # deferred: pulls in cv2
    return _predict(source, image, **kwargs)


def __getattr__(name):
    if name == "Predictor":  # imported on first use: it pulls in albumentations
        from zoo.inference.predict import Predictor  # deferred: pulls in cv2
        return Predictor
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = ["create", "list_models", "load", "predict", "Predictor", "__version__"]
