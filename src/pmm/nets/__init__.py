"""What every pmm network shares: built from a Hydra spec, input normalised from the backbone's data config."""

from pmm.nets.build import build_from_spec, network_spec
from pmm.nets.normalize import ImageNormalize, data_config_of

__all__ = ["ImageNormalize", "build_from_spec", "data_config_of", "network_spec"]
