"""Decoders: everything that turns encoder features back into a dense map."""
from decoders import content_aware  # noqa: F401  (registers carafe, dysample)
from decoders import guided  # noqa: F401  (registers fade, sapa)
from decoders import a2u, freqfusion, indexnet  # noqa: F401  (registers a2u, freqfusion, guided_indexnet)
from decoders.upsample import UPSAMPLERS, Upsampler, make_upsampler, register_upsampler

__all__ = ["UPSAMPLERS", "Upsampler", "make_upsampler", "register_upsampler"]
