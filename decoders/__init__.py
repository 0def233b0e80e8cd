"""Decoders: everything that turns encoder features back into a dense map."""
from decoders.upsample import UPSAMPLERS, make_upsampler

__all__ = ["UPSAMPLERS", "make_upsampler"]
