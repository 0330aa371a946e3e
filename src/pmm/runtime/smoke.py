"""``debug=smoke``: shrink any preset to a few steps on a few small images, on the CPU, same code path.

The shrinking is done in code rather than in YAML because it must only *shrink* what a preset set:
a preset without the reference augmentation (``data.cam_aug: null``) must not gain one, a preset
with iteration-based training keeps it with fewer iterations, and so on. Networks, pipelines,
TTA modes, CRF settings and cyclic protocol stay as the preset has them; only sizes and counts
change, and pretrained weights (a download) are off.
"""

from __future__ import annotations

from omegaconf import DictConfig, open_dict


def _set(node: DictConfig, key: str, value) -> None:
    if node is not None and key in node and node[key] is not None:
        node[key] = value


def _shrink_cam_network(node: DictConfig, backbone: str | None) -> None:
    """A CAM network node (``cam_net``, ``cam.multi_crop.net``) without weight files, on the smoke's backbone.

    A 100-layer backbone takes minutes a step on a loaded laptop CPU: the smoke trains a small one
    of the same kind (a timm ResNet through the same timm code path); the presets' own backbones
    are built in tests/test_conf_presets.py. The small one has neither ScaleNet's structure file
    nor the preset backbone's modules to freeze, and no SEAM head to load.
    """
    _set(node, "pretrained", False)
    _set(node, "weights", None)
    _set(node, "head_weights", False)
    if backbone:
        _set(node, "backbone", str(backbone))
        _set(node, "structure", None)
        _set(node, "freeze", None)


def apply_smoke(cfg: DictConfig) -> None:
    """Shrink ``cfg`` in place according to ``cfg.smoke`` (images, crop, steps)."""
    smoke = cfg.get("smoke")
    if not smoke:
        return
    images, crop, steps = int(smoke.images), int(smoke.crop), int(smoke.steps)
    if not (images >= 1 and crop >= 32 and crop % 32 == 0 and steps >= 1):
        from pmm.errors import PmmError

        raise PmmError(f"smoke={dict(smoke)}: expected images >= 1, crop a multiple of 32 (>= 32), steps >= 1")
    with open_dict(cfg):
        trainer = cfg.trainer
        trainer.accelerator, trainer.devices, trainer.num_nodes = "cpu", 1, 1
        trainer.strategy = "auto"
        trainer.precision = "32-true"
        trainer.sync_batchnorm = False
        trainer.log_every_n_steps = 1
        data = cfg.data
        data.num_workers = 0
        data.batch_size = 2
        data.limit_images = images
        cfg.cam.crop_size = cfg.seg.crop_size = crop
        if data.get("cam_aug"):
            _set(data.cam_aug, "long_side", [crop, crop + crop // 2])
        if data.get("seg_aug"):
            _set(data.seg_aug, "short_side", crop)
            _set(data.seg_aug, "max_long", crop * 4)
        for node in (cfg.cam_net, cfg.segmenter):
            _set(node, "pretrained", False)
            _set(node, "weights", None)
        _shrink_cam_network(cfg.cam_net, smoke.get("backbone"))
        if smoke.get("backbone"):
            if str(cfg.segmenter.get("encoder", "")).startswith("tu-"):
                cfg.segmenter.encoder = f"tu-{smoke.backbone}"
        cam = cfg.cam
        cam.max_epochs, cam.batch_size, cam.infer_batch_size = 1, 2, 2
        cam.global_batch_size = None  # 2 images a step, whatever the preset's global batch
        cam.lengthen_to_steps = None
        cam.window, cam.stride = crop, crop * 3 // 4
        if cam.get("multi_crop"):
            multi_crop = cam.multi_crop
            multi_crop.epochs = 1
            multi_crop.global_batch_size = None
            _set(multi_crop, "batch_size", 2)
            if multi_crop.get("net") is not None:  # the round's own network, shrunk the same way
                _shrink_cam_network(multi_crop.net, smoke.get("backbone"))
        cfg.pseudo.workers = 1
        seg = cfg.seg
        seg.batch_size = 2
        seg.global_batch_size = None
        seg.lengthen_to_steps = None
        rounds = int(cfg.cyclic.rounds)
        if seg.get("max_steps"):
            # A round spans at least one epoch (rounds switch masks at epoch ends): 2-image batches.
            per_round = max(steps, images // 2)
            seg.max_steps = per_round * (rounds + 1)
            if cfg.cyclic.get("every_n_steps"):
                cfg.cyclic.every_n_steps = per_round
            if seg.get("val_check_interval"):
                seg.val_check_interval = per_round
        else:
            seg.max_epochs = None
            cfg.cyclic.every_n_epochs = 1
        # Test-time scales: the first two of each list (a count; the multi-crop round's ten scales of
        # tiles would cost the smoke minutes).
        for node, key in ((cam, "scales"), (cfg.cyclic, "scales"), (cfg.eval, "scales"),
                          (cfg.eval, "ms_scales"), (cam.get("multi_crop"), "rough_scales")):
            if node is not None and node.get(key) is not None and len(node[key]) > 2:
                node[key] = list(node[key])[:2]
        for node in (cfg.cyclic, cfg.eval):
            node.window, node.stride = crop, crop * 3 // 4
            _set(node, "short_side", crop)
            _set(node, "max_long", crop * 4)
            node.batch_size = 2
