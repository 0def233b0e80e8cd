"""The segmentation_models_pytorch (smp) model matching a zoo model, for the benchmark
(`zoo.lab.bench`) and the learning-parity runs (`zoo.lab.parity`).

The smp counterpart of `unet` is `smp.Unet` with the same encoder (smp's own
implementation where it has one, else `tu-<timm name>`), decoder widths and
interpolation (comparable for `nearest` and `bilinear`); of `pspnet`,
`smp.PSPNet` at the same depth, output stride and width, marked not
comparable (its fuse convolution is 1x1, its classifier 3x3, no auxiliary
head). FCN and DeconvNet have no smp counterpart.
"""
from __future__ import annotations

from torch import nn

SMP_COUNTERPARTS = ("unet", "pspnet")


def smp_encoder_name(encoder: str) -> str:
    """smp's own encoder where it has one of that name, else its timm wrapper."""
    from segmentation_models_pytorch.encoders import get_encoder_names
    return encoder if encoder in get_encoder_names() else f"tu-{encoder}"


def unet_widths(zoo_unet: nn.Module) -> list[int]:
    """The decoder widths of a zoo U-Net, deepest stage first (smp's `decoder_channels`)."""
    return [stage.convs[-1][0].out_channels for stage in zoo_unet.head.stages]


def smp_unet(zoo_unet: nn.Module, encoder: str, num_classes: int, interpolation: str = "nearest") -> nn.Module:
    """`smp.Unet` with the zoo U-Net's encoder, depth and decoder widths."""
    import segmentation_models_pytorch as smp
    widths = unet_widths(zoo_unet)
    return smp.Unet(smp_encoder_name(encoder), encoder_weights=None, encoder_depth=len(widths),
                    decoder_channels=widths, classes=num_classes, decoder_interpolation=interpolation)


def build_smp(spec, zoo_model: nn.Module) -> tuple[nn.Module, bool, str]:
    """The smp model matching a `zoo.lab.bench.BenchSpec` and its built zoo model:
    (model, comparable, note). Raises LookupError where smp has no counterpart."""
    if spec.arch not in SMP_COUNTERPARTS:
        raise LookupError(f"smp has no counterpart of {spec.arch} (only of {', '.join(SMP_COUNTERPARTS)})")
    import segmentation_models_pytorch as smp
    enc = smp_encoder_name(spec.encoder)
    reductions = zoo_model.encoder.reductions
    if spec.arch == "unet":
        resize = spec.upsample in ("nearest", "bilinear")
        model = smp_unet(zoo_model, spec.encoder, spec.num_classes, spec.upsample if resize else "nearest")
        comparable = resize and reductions[-1] == 32
        note = (f"smp.Unet({enc}, decoder_channels={tuple(unet_widths(zoo_model))}, "
                f"{'interpolation=' + spec.upsample if resize else 'nearest: smp cannot ' + spec.upsample}); "
                "with a resize both concatenate the resized feature with the skip and convolve "
                "3x3 twice, and both classify with a 3x3 convolution: the same layers")
        return model, comparable, note
    os_ = reductions[-1]
    head_c = zoo_model.head.fuse[0][0].out_channels
    model = smp.PSPNet(enc, encoder_weights=None, encoder_depth=len(reductions),
                       output_stride=os_, psp_out_channels=head_c, upsampling=os_,
                       classes=spec.num_classes)
    note = (f"smp.PSPNet({enc}, depth {len(reductions)}, OS {os_}, width {head_c}): 1x1 fuse conv "
            f"and 3x3 classifier (zoo: 3x3 and 1x1), dropout 0.2, bilinear x{os_} resize, no aux head")
    return model, False, note
