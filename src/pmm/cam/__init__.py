"""The CAM stage: classifier network, Lightning module, multi-scale inference and evaluation."""
