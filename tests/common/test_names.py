"""zoo.common.names: the close-match hint every "unknown X" error shares."""
from zoo.common.names import close_matches, did_you_mean


def test_close_matches_best_first_and_bounded():
    names = ["unet", "pspnet_voc", "pspnet_camvid", "fcn8s"]
    assert close_matches("pspnet_vocc", names) == ["pspnet_voc", "pspnet_camvid", "unet"]
    assert close_matches("pspnet_vocc", names, n=1) == ["pspnet_voc"]
    assert close_matches("pspnet_vocc", names, cutoff=0.6) == ["pspnet_voc", "pspnet_camvid"]
    assert close_matches(7, ["7", "77", "x"]) == ["7", "77"]  # keys of any type compare as text


def test_did_you_mean_wording():
    assert did_you_mean("trian", ["train", "eval"]) == "did you mean train?"
    assert did_you_mean("sed", ["seeds", "seed"], joiner=" or ", quote=True) == "did you mean 'seed' or 'seeds'?"
    assert did_you_mean("xyz", ["train", "eval"]) == ""
    assert did_you_mean("grd", ["grid"], cutoff=0.9) == ""  # the cut-off decides what counts as close
