"""Segmentation model zoo with pluggable decoders.

    import zoo
    model = zoo.create("pspnet", encoder="resnet50", upsample="pixelshuffle", num_classes=21)
    zoo.list_models("fcn*")
"""
from zoo.registry import create, list_models

__version__ = "0.1.0"


def load(source: str, **kwargs):
    """A model from a run folder, a published folder or its URL (see zoo.hub.load)."""
    from zoo import hub
    return hub.load(source, **kwargs)


__all__ = ["create", "list_models", "load", "__version__"]
