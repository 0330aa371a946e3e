"""Network plumbing every pmm network shares: built from a Hydra spec, timm backbones, input encoding and
normalisation, the CAM-network base, test-time augmentation, the poly schedule."""

from pmm.nets.build import build_from_spec, network_spec
from pmm.nets.normalize import ImageNormalize, data_config_of

__all__ = ["ImageNormalize", "build_from_spec", "data_config_of", "network_spec"]
