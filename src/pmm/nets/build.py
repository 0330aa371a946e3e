"""Networks as Hydra objects: build one from its config node, save how, rebuild it from a checkpoint.

A network's *spec* is its config node as plain data — ``_target_`` plus constructor arguments —
stored in every checkpoint (``hyper_parameters.net_config``), so a checkpoint rebuilds its network
with ``hydra.utils.instantiate`` whatever class it is, without the run's config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pmm.errors import PmmError

# The class a config node (or an older checkpoint's spec) without ``_target_`` builds. These names
# are stored in checkpoints: they stay importable under them.
DEFAULT_TARGETS = {
    "cam": "pmm.cam.net.CAMNet",
    "seg": "pmm.seg.model.Segmenter",
    "data": "pmm.data.sources.VOCDataset",
}


def network_spec(node: Mapping | DictConfig, exclude: Iterable[str] = (), default_target: str | None = None,
                 **arguments) -> dict:
    """The plain-data spec of a network: the node (resolved) minus ``exclude`` keys, plus ``arguments``."""
    spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    for key in exclude:
        spec.pop(key, None)
    spec.update(arguments)
    if "_target_" not in spec:
        if default_target is None:
            raise PmmError(f"network config has no _target_; give the class to build, e.g. _target_: {DEFAULT_TARGETS['cam']}")
        spec["_target_"] = default_target
    return spec


def build_from_spec(spec: Mapping, config_key: str) -> nn.Module:
    """Instantiate a spec; a constructor error becomes one line naming ``config_key`` and the class."""
    try:
        return instantiate(dict(spec), _convert_="all")
    except PmmError:
        raise
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, PmmError):
            raise cause from None
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise PmmError(f"{config_key}: could not build {spec.get('_target_')} ({message}); check the {config_key} settings") from None


def build_cam_network(node, num_classes: int, config_key: str = "cam_net"):
    """(network, spec) of a CAM network node (``cam_net``, ``cam.multi_crop.net``); errors name ``config_key``."""
    from pmm.nets.scalenet import read_structure

    spec = network_spec(node, default_target=DEFAULT_TARGETS["cam"], num_classes=num_classes)
    if spec.get("backbone") == "scalenet101" and isinstance(spec.get("structure"), str):
        # The entries themselves go into the checkpoint's spec: it rebuilds the network without the file.
        spec["structure"] = read_structure(spec["structure"], config_key=f"{config_key}.structure")
    spec.pop("config_key", None)
    return build_from_spec({**spec, "config_key": config_key}, config_key), spec
