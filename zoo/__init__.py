"""Segmentation model zoo with pluggable decoders.

    import zoo
    model = zoo.create("pspnet", encoder="resnet50", upsample="pixelshuffle", num_classes=21)
    model = zoo.create("unet_resnet18_camvid", pretrained=True)     # a trained entry
    zoo.list_models("fcn*")
"""
__version__ = "0.1.0"

from zoo.registry import create, list_models  # noqa: E402
from zoo import hub  # noqa: E402,F401  (serves the trained entries to create / list_models; reads no file yet)


def load(source: str, **kwargs):
    """A model from a run folder, a published folder, its URL, an `hf-hub:` repository or an
    entry's name (see zoo.hub.load)."""
    return hub.load(source, **kwargs)


__all__ = ["create", "list_models", "load", "__version__"]
