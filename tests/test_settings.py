"""The typed settings (pmm.settings): one dataclass per config node, built and checked at start-up."""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import pmm
from pmm.crf import CRFParams
from pmm.errors import PmmError
from pmm.nets.tta import TTAConfig
from pmm.settings import (CAMSettings, EvalSettings, MultiCropSettings, PredictSettings, PseudoSettings, Settings,
                          validate_config)

CONF_DIR = Path(pmm.__file__).parent / "conf"


@pytest.fixture(scope="module")
def compose_cfg():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        yield lambda overrides=(), name="config": compose(name, overrides=list(overrides))
    GlobalHydra.instance().clear()


def message_of(build, cfg) -> str:
    with pytest.raises(PmmError) as error:
        build(cfg)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def differences(settings, node, key: str = "") -> list[str]:
    """The fields of ``settings`` whose value differs from the config ``node``'s (absent keys skipped)."""
    found = []
    for f in fields(settings):
        if f.name == "crf" or f.name not in node:
            continue
        value, name = getattr(settings, f.name), f"{key}.{f.name}".lstrip(".")
        if is_dataclass(value):
            found += differences(value, node[f.name], name)
            continue
        expected = OmegaConf.to_container(node[f.name], resolve=True) if OmegaConf.is_config(node[f.name]) else node[f.name]
        if (list(value) if isinstance(value, tuple) else value) != expected:
            found.append(f"{name}: {value!r} != {expected!r}")
    return found


# --------------------------------------------------------------------------------------- good configs

def test_the_defaults_are_the_default_config(compose_cfg):
    cfg = compose_cfg()
    settings = Settings.from_config(cfg)
    assert settings == Settings()
    assert differences(Settings(), cfg) == []
    assert differences(Settings().cam_net, compose_cfg(["cam_net=seam"]).cam_net) == ["output_stride: 16 != 8"]


@pytest.mark.parametrize(
    ("override", "path", "value"),
    [
        ("seed=7", "seed", 7),
        ("cam.crop_size=null", "cam.crop_size", None),
        ("seg.crop_size=512", "seg.crop_size", 512),
        ("data.scale_range=[0.5,2.0]", "data.scale_range", (0.5, 2.0)),
        ("data.generate.num_train=12", "data.generate.num_train", 12),
        ("input_encoding.mode=rgb", "input_encoding.mode", "rgb"),
        ("cam_net.dropout=0.5", "cam_net.dropout", 0.5),
        ("segmenter.encoder_depth=4", "segmenter.encoder_depth", 4),
        ("cam.mode=multi_crop", "cam.mode", "multi_crop"),
        ("cam.thresholds=[0.1,0.2]", "cam.thresholds", (0.1, 0.2)),
        ("cam.optimizer.weight_decay=0.0005", "cam.optimizer.weight_decay", 0.0005),
        ("pseudo.alpha=11", "pseudo.alpha", 11),
        ("pseudo.bg_threshold=0.3", "pseudo.bg_threshold", 0.3),
        ("seg.loss.mode=clamp", "seg.loss.mode", "clamp"),
        ("seg.max_steps=100", "seg.max_steps", 100),
        ("cyclic.mode=slide", "cyclic.mode", "slide"),
        ("cyclic.relabel_from=best", "cyclic.relabel_from", "best"),
        ("eval.export=voc_test", "eval.export", "voc_test"),
        ("eval.short_side=512", "eval.short_side", 512),
        ("+trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val", 1.0),
        ("crf.seg.iterations=5", "crf", None),
    ],
)
def test_a_good_value_of_each_node_builds(compose_cfg, override, path, value):
    settings = Settings.from_config(compose_cfg([override]))
    if path == "crf":
        assert settings.crf["seg"] == CRFParams.from_config({**asdict(Settings().crf["seg"]), "iterations": 5})
        return
    node = settings
    for part in path.split("."):
        node = getattr(node, part)
    assert node == value


def test_tta_and_crf_nodes_are_the_constructors_objects(compose_cfg):
    cfg = compose_cfg(["eval.mode=slide", "eval.scales=[0.5,1.0]"])
    settings = Settings.from_config(cfg)
    assert settings.eval.tta == TTAConfig.from_config(cfg.eval)
    assert settings.cam.tta == TTAConfig.from_config(cfg.cam)
    assert settings.cyclic.tta == TTAConfig.from_config(cfg.cyclic)
    assert settings.crf == {name: CRFParams.from_config(cfg.crf[name], key=f"crf.{name}") for name in cfg.crf}


def test_a_partial_config_builds_with_the_defaults():
    assert validate_config(OmegaConf.create({"pseudo": {"alpha": 3}})).pseudo == PseudoSettings(alpha=3)
    assert Settings.from_config(OmegaConf.create({})) == Settings()
    assert Settings.from_config({"cam": {"multi_crop": None}, "input": "photos/"}) == Settings()
    assert Settings.from_config(OmegaConf.create({"eval": {"batch_size": "???"}})).eval == EvalSettings()


def test_predict_config_builds(compose_cfg):
    cfg = compose_cfg(["input=[a.png,b.png]", "output=/tmp/out", "num_workers=0"], name="predict")
    assert Settings.from_config(cfg).eval == EvalSettings()
    assert PredictSettings.from_config(cfg) == PredictSettings(num_workers=0, overlay_alpha=0.5)


# ---------------------------------------------------------------------------------------- bad values

@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "seed=-1: expected an integer >= 0 and < 4294967296"),
        ("cam.crop_size=100", "cam.crop_size=100: expected an integer > 0, a multiple of 32 or null"),
        ("seg.crop_size=100", "seg.crop_size=100: expected an integer > 0, a multiple of 32 or null"),
        ("data.scale_range=[1.3,0.7]", "data.scale_range=[1.3, 0.7]: expected [low, high] with low <= high"),
        ("data.labels=boxes", "data.labels=boxes: expected one of masks|xml|auto"),
        ("data.generate.image_size=0", "data.generate.image_size=0: expected an integer > 0"),
        ("input_encoding.mode=hsv", "input_encoding.mode=hsv: expected one of rgb|edges|rgb+edges"),
        ("input_encoding.edge_sigma=-1", "input_encoding.edge_sigma=-1: expected a number >= 0"),
        ("cam_net.dropout=1", "cam_net.dropout=1: expected a number >= 0 and < 1"),
        ("cam_net.output_stride=0", "cam_net.output_stride=0: expected an integer > 0 or null"),
        ("segmenter.encoder_depth=6", "segmenter.encoder_depth=6: expected an integer >= 1 and <= 5 or null"),
        ("segmenter.decoder_channels=-8", "segmenter.decoder_channels=-8: expected an integer > 0 or null"),
        ("cam.mode=slide", "cam.mode=slide: expected one of whole|multi_crop"),
        ("cam.stride=500", "cam.stride=500, cam.window=448: expected a stride <= the window (crops would leave gaps)"),
        ("cam.batch_size=1.5", "cam.batch_size=1.5: expected an integer >= 1"),
        ("cam.optimizer.weight_decay=-1", "cam.optimizer.weight_decay=-1: expected a number >= 0"),
        ("cam.round=third", "cam.round=third: expected one of standard|multi_crop"),
        ("cam.multi_crop.epochs=0", "cam.multi_crop.epochs=0: expected an integer >= 1"),
        ("cam.multi_crop.min_share=2", "cam.multi_crop.min_share=2: expected a number > 0 and <= 1"),
        ("cam.multi_crop.area=[0.5,0.2]", "cam.multi_crop.area=[0.5, 0.2]: expected 0 < low <= high <= 1"),
        ("cam.multi_crop.aspect=[0,1]", "cam.multi_crop.aspect=[0, 1]: expected 0 < low <= high"),
        ("+cam.multi_crop.size=3", "cam.multi_crop.size: unknown key; known: epochs, lr, batch_size, global_batch_size, "
                                   "sampler, area, aspect, min_share, min_object_share, rough_alpha, rough_scales, "
                                   "rough_flip, rough_confidence, heat, jitter, net"),
        ("cam.multi_crop.sampler=grid", "cam.multi_crop.sampler=grid: expected one of random|tiles"),
        ("cam.multi_crop.rough_confidence=0.3", "cam.multi_crop.rough_confidence=0.3: expected a number >= 0.5 and < 1 or null"),
        ("cam.global_batch_size=0", "cam.global_batch_size=0: expected an integer >= 1 or null"),
        ("seg.val_pipeline=full", "seg.val_pipeline=full: expected one of single_scale|eval"),
        ("pseudo.alpha=-5", "pseudo.alpha=-5: expected a number > 0 or auto or search"),
        ("pseudo.cov=yes", "pseudo.cov=yes: expected true or false"),
        ("pseudo.cov_threshold=1", "pseudo.cov_threshold=1: expected a number >= 0 and < 1"),
        ("seg.min_lr=0.01", "seg.min_lr=0.01, seg.lr=0.002: expected min_lr <= lr (the poly schedule decays from lr to min_lr)"),
        ("seg.loss.warmup_epochs=-1", "seg.loss.warmup_epochs=-1: expected an integer >= 0"),
        ("seg.val_check_interval=0", "seg.val_check_interval=0: expected a number > 0 or null"),
        ("cyclic.relabel_from=first", "cyclic.relabel_from=first: expected one of last|best"),
        ("cyclic.short_side=600", None),  # max_long is null: no bound
        ("eval.stride=600", "eval.stride=600, eval.window=512: expected a stride <= the window (windows would leave gaps)"),
        ("eval.export=voc", "eval.export=voc: expected one of voc_test|null"),
        ("eval.short_side=600", None),
        ("+trainer.max_steps=-2", "trainer.max_steps=-2: expected an integer >= -1"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: expected an integer >= 1"),
        ("crf.pseudo.gauss_compat=-1", "crf.pseudo.gauss_compat=-1: expected a number >= 0"),
        ("+crf.pseudo.sigma=3", "crf.pseudo.sigma: unknown CRF setting; the settings are ..."),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(compose_cfg, override, message):
    cfg = compose_cfg([override])
    if message is None:
        Settings.from_config(cfg)
        return
    got = message_of(Settings.from_config, cfg)
    if message.endswith("..."):
        assert got.startswith(message[:-3]), got
    else:
        assert got == message


def test_short_side_above_max_long_fails(compose_cfg):
    cfg = compose_cfg(["eval.short_side=600", "eval.max_long=500"])
    assert message_of(Settings.from_config, cfg) == "eval.short_side=600, eval.max_long=500: expected short_side <= max_long"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_workers=-1", "num_workers=-1: expected an integer >= 0"),
        ("overlay_alpha=1.5", "overlay_alpha=1.5: expected a number >= 0 and <= 1"),
        ("eval.mode=tiles", "eval.mode=tiles: expected one of whole|slide|multi_crop"),
    ],
)
def test_predict_bad_values(compose_cfg, override, message):
    cfg = compose_cfg(["input=a.png", "output=/tmp/out", override], name="predict")
    build = (lambda c: (Settings.from_config(c), PredictSettings.from_config(c)))
    assert message_of(build, cfg) == message


# ------------------------------------------------------------------------------------ cam.multi_crop

def test_multi_crop_defaults_have_one_home_matching_config_yaml():
    import pmm.stages.cam_multicrop as stage

    node = OmegaConf.load(CONF_DIR / "config.yaml").cam.multi_crop
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(MultiCropSettings()).items()
                if k != "crop"}  # the crops' side is cam.crop_size, not a key of this node
    assert defaults == OmegaConf.to_container(node)
    assert CAMSettings().multi_crop == MultiCropSettings()
    assert not hasattr(stage, "DEFAULTS")


def test_multi_crop_stage_settings_resolve_lr_and_crop():
    from pmm.stages.cam_multicrop import settings

    def ctx(multi_crop, crop_size=160):
        return SimpleNamespace(cfg=OmegaConf.create({"cam": {"lr": 0.02, "batch_size": 6, "multi_crop": multi_crop}}),
                               crop_size={"cam": crop_size}.__getitem__)

    assert settings(ctx({})) == MultiCropSettings(lr=0.02, crop=160, batch_size=6)
    assert settings(ctx({"lr": 0.01, "batch_size": 3}, crop_size=448)) == MultiCropSettings(lr=0.01, crop=448, batch_size=3)
    assert settings(ctx(None)).epochs == 20
    with pytest.raises(PmmError, match="crop >= 8 expected, got 20 and 4"):
        settings(ctx({}, crop_size=4))
