"""One file per architecture; importing this package registers them all."""
from zoo.models import deconvnet, fcn, pspnet, unet  # noqa: F401
from zoo.models.base import SegmentationModel

__all__ = ["SegmentationModel"]
