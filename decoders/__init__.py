"""Decoders: everything that turns encoder features back into a dense map."""
# First: importing zoo.common runs zoo/__init__.py, which builds the model zoo and so
# imports decoders' modules; they must not find decoders.upsample half-imported.
import zoo.common.registry  # noqa: F401, I001

from decoders import (  # noqa: F401  (registers a2u, freqfusion, guided_indexnet)
    a2u,
    content_aware,  # noqa: F401  (registers carafe, dysample)
    freqfusion,
    guided,  # noqa: F401  (registers fade, sapa)
    indexnet,
)
from decoders.upsample import UPSAMPLERS, Upsampler, make_upsampler, register_upsampler

__all__ = ["UPSAMPLERS", "Upsampler", "make_upsampler", "register_upsampler"]
