"""The paper presets: composed values match the reference settings (README table), networks build, smoke runs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import pmm

CONF_DIR = str(Path(pmm.__file__).parent / "conf")


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_voc_paper_matches_the_reference_settings():
    cfg = compose_config(["experiment=voc_paper"])
    # Data: train_aug with SegmentationClassAug, image labels from XML when present.
    assert (cfg.data.train_split, cfg.data.mask_dir, cfg.data.labels) == ("train_aug", "SegmentationClassAug", "auto")
    # CAM stage: SEAM on ResNet-38 at stride 8 (dropout 0.5), SGD lr 0.02 poly, 8 epochs, 24 images a
    # step whatever the GPU count, SEAM's lr multipliers, no weight decay on biases.
    assert cfg.cam_net._target_ == "pmm.cam.seam.SEAMNet" and cfg.cam_net.output_stride == 8
    assert cfg.cam_net.backbone == "resnet38d" and cfg.cam_net.dropout == 0.5 and cfg.cam_net.pretrained
    assert cfg.cam_net.head_weights  # the reference fine-tunes SEAM's released network, head included
    assert (cfg.cam_net.bias_lr_mult, cfg.cam_net.new_weight_lr_mult, cfg.cam_net.new_bias_lr_mult) == (2.0, 10.0, 20.0)
    assert cfg.cam_net.bias_weight_decay == 0.0
    assert cfg.cam.optimizer._target_ == "torch.optim.SGD" and cfg.cam.lr == 0.02 and cfg.cam.max_epochs == 8
    # The reference's PolyOptimizer passes its weight decay into SGD's momentum slot: momentum 5e-4.
    assert cfg.cam.optimizer.momentum == 5e-4 and cfg.cam.optimizer.weight_decay == 5e-4
    assert cfg.cam.global_batch_size == 24 and cfg.seg.global_batch_size == 16
    assert list(cfg.cam.scales) == [0.5, 1.0, 1.5, 2.0] and cfg.cam.flip
    assert cfg.cam.crop_size == 448 and cfg.seg.crop_size == 512
    assert OmegaConf.to_container(cfg.data.cam_aug) == {"long_side": [448, 768],
                                                         "jitter": [0.3, 0.3, 0.3, 0.1], "image_fill": 0}
    assert cfg.cam.round == "standard" and cfg.cam.stride == 300
    # Pseudo-masks: alpha 11, the paper's CRF settings, scored on train_aug and train.
    assert cfg.pseudo.alpha == 11 and list(cfg.pseudo.split) == ["train_aug", "train"]
    assert (cfg.crf.pseudo.gauss_sxy, cfg.crf.pseudo.bilateral_sxy, cfg.crf.pseudo.bilateral_srgb) == (3, 80, 13)
    # Segmenter: PSPNet, Res2Net-101 at stride 8, aux head 0.4, mmseg's pipeline.
    assert cfg.segmenter.arch == "pspnet" and cfg.segmenter.aux and cfg.segmenter.output_stride == 8
    assert cfg.segmenter.encoder == "tu-res2net101d" and cfg.seg.aux_weight == 0.4
    assert OmegaConf.to_container(cfg.data.seg_aug) == {
        "short_side": 512, "max_long": 2048, "ratio_range": [0.5, 2.0], "cat_max_ratio": 0.75,
        "photometric": True, "ignore_index": 255, "image_fill": 0}
    # Schedule: one lr for all (0.005), momentum 0.9, wd 5e-4, poly to 1e-4, 2 x 20k iterations, val every 2k.
    assert (cfg.seg.lr, cfg.seg.head_lr_mult, cfg.seg.min_lr, cfg.seg.poly_power) == (0.005, 1.0, 1e-4, 0.9)
    assert cfg.seg.optimizer.momentum == 0.9 and cfg.seg.optimizer.weight_decay == 5e-4
    assert cfg.seg.max_steps == 40000 and cfg.cyclic.every_n_steps == 20000 and cfg.seg.val_check_interval == 2000
    assert cfg.seg.loss.mode == "clamp" and (cfg.seg.loss.beta, cfg.seg.loss.k) == (0.5, 0.5)
    assert cfg.seg.val_pipeline == "eval"  # periodic validation with the test pipeline + CRF: val_miou_best
    # Cyclic: best-val checkpoint relabels train_aug with the full test pipeline over all classes, round 2 from
    # ImageNet weights with plain CE.
    assert cfg.cyclic.rounds == 1 and cfg.cyclic.relabel_from == "best" and not cfg.cyclic.restrict_to_labels
    assert cfg.cyclic.reinit and cfg.cyclic.puf_first_round_only and cfg.cyclic.crf
    for node in (cfg.cyclic, cfg.eval):
        assert list(node.scales) == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and node.flip
        assert (node.mode, node.window, node.stride, node.short_side, node.max_long) == ("slide", 512, 480, 512, 2048)
    assert cfg.eval.crf
    assert (cfg.crf.seg.gauss_sxy, cfg.crf.seg.gauss_compat, cfg.crf.seg.bilateral_sxy, cfg.crf.seg.bilateral_srgb,
            cfg.crf.seg.bilateral_compat) == (1, 3, 67, 3, 4)
    assert cfg.trainer.sync_batchnorm and cfg.trainer.precision == "bf16-mixed"


def test_seam_multicrop_is_the_authors_second_round():
    cfg = compose_config(["experiment=[voc_paper,seam_multicrop]"])
    mc = cfg.cam.multi_crop
    assert cfg.cam.round == "multi_crop" and cfg.cam.mode == "multi_crop"
    assert list(cfg.cam.scales) == [0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]
    assert (cfg.cam.window, cfg.cam.stride, cfg.cam.flip) == (448, 300, True)
    # A fresh SEAM on ScaleNet-101 (stride 8, no dropout), 20 epochs, lr 0.02, 16 images a step.
    assert mc.net._target_ == "pmm.cam.seam.SEAMNet" and mc.net.backbone == "scalenet101"
    assert mc.net.output_stride == 8 and mc.net.dropout == 0.0 and mc.net.pretrained
    assert (mc.epochs, mc.lr, mc.global_batch_size) == (20, 0.02, 16)
    # Tiles of the inference grid, labelled by the two ratios from rough masks at marginal > 0.9 of
    # the first round's multi-scale CAMs, CRF 3/3, 80/13/10 over [(1 - max S) ** 24, S].
    assert (mc.sampler, mc.min_share, mc.min_object_share, mc.heat) == ("tiles", 0.1, 0.1, False)
    assert (list(mc.rough_scales), mc.rough_flip, mc.rough_confidence, mc.rough_alpha) == ([0.5, 1.0, 1.5, 2.0], True, 0.9, 24)
    assert (cfg.crf.rough.gauss_sxy, cfg.crf.rough.gauss_compat, cfg.crf.rough.bilateral_sxy,
            cfg.crf.rough.bilateral_srgb, cfg.crf.rough.bilateral_compat) == (3, 3, 80, 13, 10)
    # The first round stays voc_paper's: ResNet-38, 24 images a step.
    assert cfg.cam_net.backbone == "resnet38d" and cfg.cam.global_batch_size == 24


def test_coco_paper_has_cocos_schedule():
    cfg = compose_config(["experiment=coco_paper"])
    assert cfg.data._target_ == "pmm.data.sources.COCODataset"
    assert (cfg.seg.lr, cfg.seg.max_steps, cfg.seg.min_lr, cfg.seg.global_batch_size) == (0.01, 40000, 5e-5, 32)
    assert (cfg.seg.loss.mode, cfg.seg.loss.beta, cfg.seg.loss.k) == ("clamp", 0.8, 0.8)
    assert cfg.cyclic.rounds == 0
    # COCO's CAMs: one round of SEAM on ScaleNet-101, 20 epochs, lr 0.01, 8 a step, plain random crops
    # (the reference's crop pipeline), multi-crop inference.
    assert cfg.cam_net.backbone == "scalenet101" and cfg.cam_net.dropout == 0.0
    assert (cfg.cam.max_epochs, cfg.cam.lr, cfg.cam.global_batch_size, cfg.cam.round) == (20, 0.01, 8, "standard")
    assert cfg.cam.mode == "multi_crop" and len(cfg.cam.scales) == 10
    assert cfg.cam.optimizer.momentum == 5e-4


def test_the_presets_own_networks_build(tmp_path):
    import json

    from test_nets_paper_backbones import small_structure

    from pmm.nets.build import build_from_spec, network_spec
    from pmm.nets.build import build_cam_network

    cfg = compose_config(["experiment=voc_paper", "cam_net.pretrained=false", "cam_net.head_weights=false",
                          "segmenter.pretrained=false"])  # no SEAM file here: its loading is tested with the network
    cam, _ = build_cam_network(cfg.cam_net, 20)
    seg = build_from_spec(network_spec(cfg.segmenter, exclude=("init_from_cam",), num_classes=21), "segmenter")
    assert cam.num_classes == 20 and seg.aux_head is not None
    assert type(cam.backbone).__name__ == "ResNet38d"
    groups = {g["name"]: g for g in cam.param_groups(0.02)}  # SEAM's lr groups, biases without decay
    assert groups["new_weight"]["lr"] == 0.2 and all(g["weight_decay"] == 0 for k, g in groups.items() if "bias" in k)
    assert "bias" not in groups  # ResNet-38's convolutions have none and its BatchNorms are fixed, as the reference
    frozen = {name for name, p in cam.named_parameters() if not p.requires_grad}
    assert any(name.startswith("backbone.conv1a") for name in frozen)  # the reference's frozen stem
    # The multi-crop round's own network (ScaleNet-101, a structure file in the official format) and COCO's.
    structure = tmp_path / "scalenet101.json"
    structure.write_text(json.dumps(small_structure()))
    mc = compose_config(["experiment=[voc_paper,seam_multicrop]", "cam.multi_crop.net.pretrained=false",
                         f"cam.multi_crop.net.structure={structure}"])
    round_two, spec = build_cam_network(mc.cam.multi_crop.net, 20, "cam.multi_crop.net")
    assert type(round_two.backbone).__name__ == "ScaleNet" and isinstance(spec["structure"], list)
    coco = compose_config(["experiment=coco_paper", "cam_net.pretrained=false", f"cam_net.structure={structure}"])
    assert type(build_cam_network(coco.cam_net, 80)[0].backbone).__name__ == "ScaleNet"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["voc_paper", "coco_paper", "[voc_paper,seam_multicrop]"])
def test_smoke_runs_every_stage_of_the_preset(preset, voc_aug_tree, tmp_path):
    from test_run_pipeline import run_stage

    root = voc_aug_tree
    if preset == "coco_paper":  # a converted COCO tree: class list in the tree, train/val lists, plain masks
        root = tmp_path / "coco"
        shutil.copytree(voc_aug_tree, root)
        from pmm.data.voc import VOC_CLASS_NAMES

        (root / "class_names.txt").write_text("\n".join(VOC_CLASS_NAMES) + "\n")
    metrics = run_stage(tmp_path / "run", tmp_path / "data", [
        "stage=all", f"experiment={preset}", "debug=smoke", f"data.root={root}", "logger=csv"], shrink=False)
    assert metrics["num_classes"] == 21 and "val_miou" in metrics and "val_miou_best" in metrics
    rounds = 1 if preset == "coco_paper" else 2
    assert len(metrics["pseudo_miou_rounds"]) == rounds
    if preset != "coco_paper":
        assert set(metrics["pseudo_miou_by_split"]) == {"train_aug", "train"}
        assert metrics["val_pipeline"] == "eval"
    # Smoke trains 2 images a step whatever the preset's global batch; the run records it.
    assert metrics["batch"]["seg"] == {"global_batch_size": 2, "world_size": 1, "accumulate_grad_batches": 1,
                                       "per_process_batch_size": 2}
    if preset.startswith("[voc_paper,seam_multicrop"):  # both CAM rounds ran: ResNet-38's, then the tiles round
        assert metrics["cam_round"] == "multi_crop" and metrics["cam_multi_crop"]["sampler"] == "tiles"
        assert (tmp_path / "run" / "checkpoints" / "cam_first_round" / "last.ckpt").is_file()
        assert 0 < metrics["cam_rough_coverage"] <= 1


@pytest.mark.parametrize(("overrides", "t_star", "expected"), [
    (["pseudo.alpha=auto"], 0.65, 1.0),                             # the formula's 0.41, clipped to the floor
    (["pseudo.alpha=auto"], 0.30, math.log(0.30) / math.log(0.70)),  # inside the range: the formula itself
    (["pseudo.alpha=auto"], 0.16, math.log(0.16) / math.log(0.84)),  # VOC-like CAMs: about 10.5, the paper's 11
    (["experiment=voc_paper"], 0.65, 11.0),                          # the paper presets fix alpha
])
def test_alpha_auto_and_fixed(overrides, t_star, expected):
    from types import SimpleNamespace

    from pmm.stages.pseudo import resolve_alpha

    cfg = compose_config(overrides)
    assert resolve_alpha(SimpleNamespace(cfg=cfg), t_star) == pytest.approx(expected)


def test_the_default_searches_alpha_and_the_presets_do_not():
    assert compose_config([]).pseudo.alpha == "search"
    assert compose_config(["experiment=voc_paper"]).pseudo.alpha == 11
