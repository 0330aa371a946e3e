"""``crf.*.backend=torch``: the dense CRF in PyTorch, batched on CUDA when there is a GPU.

Mean-field inference of Krähenbühl & Koltun's fully-connected CRF with Potts compatibilities, all
problems of one image at once (PPMG's K two-label problems are P x L = K x 2 channels of one filter
call), every step a tensor op on one device:

- bilateral kernel: a permutohedral lattice built in torch with pydensecrf's own arithmetic (float32
  elevation, rounding, simplex ranks, barycentric weights, ``[1/2, 1, 1/2]`` blur along the d + 1
  axes, ``1 / (1 + 2^-d)`` slice factor); splat = ``index_add_``, blur and slice = gathers;
- spatial kernel: a separable Gaussian convolution of std ``gauss_sxy`` (zero padding), which
  pydensecrf approximates by a 2-d lattice whose impulse response has std 2.9-3.1 px at sxy = 3;
- pydensecrf's symmetric normalisation ``n = (K 1)^-1/2`` for both kernels.

The device: the backend's ``device`` attribute when set (``"cuda"``, ``"cpu"``, ...), else CUDA when
available, else the CPU. :meth:`TorchBackend.solve_tensors` takes and returns tensors (unaries on
the device: no host round trip for a GPU pipeline).

Its agreement with pydensecrf and its CPU speed are in docs/benchmarks.md. It is
meant for the GPU, where the lattice build and every iteration are a handful of kernels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pmm.crf.base import CRFBackend, CRFParams, register_crf_backend

__all__ = ["TorchBackend", "TorchLattice", "gaussian_filter", "mean_field"]


class TorchLattice:
    """densecrf's permutohedral lattice over N x d float32 features, on the features' device."""

    def __init__(self, features: torch.Tensor):
        n, d = features.shape
        dev = features.device
        self.dim, self.num_points = d, n
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        f = features.to(torch.float32)
        inv_std = np.float32(math.sqrt(2.0 / 3.0) * (d + 1))
        scale = [float(np.float32(1.0 / math.sqrt((i + 2) * (i + 1)) * float(inv_std))) for i in range(d)]

        # Elevation onto sum(x) = 0 (float32, the C++ order of operations).
        elevated = torch.empty((n, d + 1), dtype=torch.float32, device=dev)
        running = torch.zeros(n, dtype=torch.float32, device=dev)
        for j in range(d, 0, -1):
            cf = f[:, j - 1] * scale[j - 1]
            elevated[:, j] = running - j * cf
            running = running + cf
        elevated[:, 0] = running

        # Closest remainder-0 point (ties round down), in units of d + 1.
        down_factor = float(np.float32(1.0) / np.float32(d + 1))
        v = elevated * down_factor
        up, down = torch.ceil(v), torch.floor(v)
        rem0 = torch.where(up * (d + 1) - elevated < elevated - down * (d + 1), up, down)
        total = rem0.sum(1).round().to(torch.int64)
        diff = elevated - rem0 * (d + 1)
        # rank[i] = #{j: diff_j > diff_i} + #{j < i: diff_j == diff_i}
        di, dj = diff[:, :, None], diff[:, None, :]
        earlier = torch.tril(torch.ones(d + 1, d + 1, dtype=torch.bool, device=dev), diagonal=-1)
        rank = ((dj > di) | ((dj == di) & earlier)).sum(2) + total[:, None]
        wrap = (rank < 0).to(torch.int64) - (rank > d).to(torch.int64)
        rank = rank + (d + 1) * wrap
        rem0 = rem0.to(torch.int64) + wrap
        del di, dj, diff

        # Barycentric weights: slot m gets v[rank d - m] - v[rank d - m + 1], slot 0 wraps around.
        v = (elevated - (rem0 * (d + 1)).to(torch.float32)) * down_factor
        by_rank = torch.empty_like(v).scatter_(1, rank, v)
        weights = torch.empty_like(v)
        weights[:, 1:] = by_rank.flip(1)[:, 1:] - by_rank.flip(1)[:, :-1]
        weights[:, 0] = (by_rank[:, d].double() + (1.0 - by_rank[:, 0].double())).float()
        self.weights = weights

        # Vertex keys: key_r[i] = (d+1) rem0[i] + r - (d+1) [rank[i] > d - r], i < d; encoded in int64
        # with a margin of d + 1 so that blur neighbours encode too.
        r = torch.arange(d + 1, device=dev)
        keys = (d + 1) * rem0[:, None, :d] + r[None, :, None] - (d + 1) * (rank[:, None, :d] > (d - r)[None, :, None])
        lo = keys.amin(dim=(0, 1)) - (d + 1)
        spans = keys.amax(dim=(0, 1)) + (d + 1) - lo + 1
        if float(torch.prod(spans.double())) >= 2.0**62:
            raise ValueError("lattice coordinates out of range (features far too large for their kernel width)")
        mult = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64, device=dev), spans[:-1]]), 0)
        encoded = ((keys - lo) * mult).sum(2)
        del keys
        vertices, inverse = torch.unique(encoded.reshape(-1), sorted=True, return_inverse=True)
        m = vertices.numel()
        self.num_vertices = m
        self.offsets = inverse.reshape(n, d + 1)

        # Blur neighbours (index m = a zero row; row m points at itself).
        neighbours = torch.full((d + 1, 2, m + 1), m, dtype=torch.int64, device=dev)
        total_mult = int(mult.sum())
        for j in range(d + 1):
            delta = -total_mult + ((d + 1) * int(mult[j]) if j < d else 0)
            for side, sign in enumerate((1, -1)):
                wanted = vertices + sign * delta
                pos = torch.searchsorted(vertices, wanted).clamp_(max=m - 1)
                neighbours[j, side, :m] = torch.where(vertices[pos] == wanted, pos, torch.full_like(pos, m))
        self.neighbours = neighbours

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """pydensecrf's ``Permutohedral::compute`` of N x C values."""
        c = values.shape[1]
        buffer = torch.zeros((self.num_vertices + 1, c), dtype=values.dtype, device=values.device)
        buffer.index_add_(0, self.offsets.reshape(-1), (self.weights[:, :, None] * values[:, None, :]).reshape(-1, c))
        for j in range(self.dim + 1):
            n1, n2 = self.neighbours[j]
            buffer = buffer + 0.5 * (buffer[n1] + buffer[n2])
        return torch.einsum("nkc,nk->nc", buffer[self.offsets], self.weights) * self.alpha


def gaussian_filter(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (std ``sigma`` px, radius ceil(4 sigma), zero padding) of C x H x W."""
    radius = int(math.ceil(4.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    taps = (taps / taps.sum()).to(images.dtype)
    out = torch.nn.functional.conv2d(images[:, None], taps.view(1, 1, 1, -1), padding=(0, radius))
    out = torch.nn.functional.conv2d(out, taps.view(1, 1, -1, 1), padding=(radius, 0))
    return out[:, 0]


def _features(image: torch.Tensor, sxy: float, srgb: float | None) -> torch.Tensor:
    height, width = image.shape[:2]
    dev = image.device
    xs = torch.arange(width, dtype=torch.float32, device=dev) / float(np.float32(sxy))
    ys = torch.arange(height, dtype=torch.float32, device=dev) / float(np.float32(sxy))
    columns = [xs.repeat(height), ys.repeat_interleave(width)]
    if srgb is not None:
        colours = image.reshape(-1, 3).to(torch.float32)
        columns += [colours[:, c] / float(np.float32(srgb)) for c in range(3)]
    return torch.stack(columns, 1)


@torch.no_grad()
def mean_field(image: torch.Tensor, unaries: torch.Tensor, params: CRFParams) -> torch.Tensor:
    """Marginals P x L x H x W of P problems (unaries P x L x H x W float32) sharing one H x W x 3 image."""
    num_problems, num_labels, height, width = unaries.shape
    n = height * width
    channels = num_problems * num_labels
    neg_unary = -unaries.reshape(channels, n).to(torch.float32)

    kernels = []  # (apply: C x N -> C x N, weight)
    if params.bilateral_compat:
        lattice = TorchLattice(_features(image, params.bilateral_sxy, params.bilateral_srgb))
        norm_b = torch.rsqrt(lattice.filter(torch.ones((n, 1), device=image.device))[:, 0] + 1e-20)
        kernels.append((lambda q, lat=lattice, nb=norm_b: (lat.filter((q * nb).T).T * nb), float(params.bilateral_compat)))
    if params.gauss_compat:
        sigma = float(params.gauss_sxy)
        ones = torch.ones((1, height, width), device=image.device)
        norm_g = torch.rsqrt(gaussian_filter(ones, sigma).reshape(n) + 1e-20)
        kernels.append((lambda q, ng=norm_g, s=sigma: gaussian_filter((q * ng).reshape(-1, height, width), s)
                        .reshape(-1, n) * ng, float(params.gauss_compat)))

    def normalise(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.reshape(num_problems, num_labels, n), dim=1).reshape(channels, n)

    q = normalise(neg_unary)
    for _ in range(int(params.iterations)):
        logits = neg_unary.clone()
        for apply, weight in kernels:
            logits += weight * apply(q)
        q = normalise(logits)
    return q.reshape(num_problems, num_labels, height, width)


@register_crf_backend("torch")
class TorchBackend(CRFBackend):
    """Mean-field on a torch device (CUDA when available); exact lattice, Gaussian-convolution spatial kernel."""

    device: str | None = None

    def resolve_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def solve_tensors(self, image: torch.Tensor, unaries: torch.Tensor, params: CRFParams) -> torch.Tensor:
        """Like :meth:`solve` on tensors: image H x W x 3 (uint8 values), unaries P x L x H x W, same device."""
        return mean_field(image, unaries, params)

    def solve(self, image: np.ndarray, unaries: np.ndarray, params: CRFParams) -> np.ndarray:
        device = self.resolve_device()
        image_t = torch.from_numpy(np.ascontiguousarray(image)).to(device)
        unaries_t = torch.from_numpy(np.ascontiguousarray(unaries, dtype=np.float32)).to(device)
        return mean_field(image_t, unaries_t, params).cpu().numpy()
