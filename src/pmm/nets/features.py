"""What a pmm-native backbone shares with a timm ``features_only`` model: stage indices and ``feature_info``."""

from __future__ import annotations

from collections.abc import Sequence

from timm.models._features import FeatureInfo


def stage_indices(out_indices: Sequence[int], count: int) -> tuple[int, ...]:
    """``out_indices`` with negative entries counted from the end (as timm's), checked to exist."""
    resolved = []
    for index in out_indices:
        if not -count <= int(index) < count:
            raise ValueError(f"stage index {index} out of range: the network has {count} stages")
        resolved.append(int(index) % count)
    return tuple(resolved)


def feature_info(names: Sequence[str], channels: Sequence[int], reductions: Sequence[int],
                 out_indices: Sequence[int]) -> FeatureInfo:
    """timm's ``FeatureInfo`` of the stages (``.channels()``, ``.reduction()`` of ``out_indices``)."""
    return FeatureInfo([{"num_chs": c, "reduction": r, "module": m} for m, c, r in zip(names, channels, reductions)],
                       tuple(out_indices))
