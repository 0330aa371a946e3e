"""pmm: Pseudo-mask Matters (ICCV 2021) for weakly-supervised semantic segmentation."""

__version__ = "0.1.0"
