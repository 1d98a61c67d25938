"""Benchmark: hierarchical graph construction on the reference benchmark case, and VQ-VAE encode throughput.

The case (as specified for the released reference code's timing): a 240x240x155 volume, 4 smooth random
structural channels, an ellipsoid tumour of about 50,000 voxels, codes from 3 smoothed (sigma=4) random
binary fields with 2 % voxel-wise salt noise, random latents (N=3, d=256). The reference needs about 127 s
(2.4 s components, 5.9 s coarse graph, 119 s fine graph with SLIC) and 0.94 GB peak on this machine type;
the target is <= 6 s and <= 0.5 GB.

We also time, in the same run, the reference's fine-graph strategy (SLIC over the *whole volume* with the
habitat as mask, once per habitat) on a few habitats, and extrapolate it to all habitats SLIC is run on,
so the speed-up of the bounding-box strategy is a ratio measured here, not only against a quoted number.

Peak memory is tracemalloc's peak over `build_hier_graph` (NumPy and PyTorch CPU buffers are traced;
the inputs, allocated before tracing starts, are not counted). Writes section "Graphs" of BENCHMARKS.md.
Usage: python bench/graphs.py [--repeats 3]
"""
import argparse
import math
import os
import platform
import time
import tracemalloc

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import slic

from hiperf_nb.graphs import GraphConfig, build_hier_graph, code_keys, habitat_components
from hiperf_nb.io import LoadedCase, normalize_structural
from hiperf_nb.vqvae import VQVAE

from _report import write_section

SHAPE = (240, 240, 155)


def make_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    struct = np.stack([ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 3) for _ in range(4)], -1)
    struct = (struct - struct.mean()) / struct.std() * 100 + 500
    g = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    c, r = (120, 120, 77), (30, 25, 16)  # 4/3 pi 30 25 16 = 50,265 voxels
    mask = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(g, c, r)) <= 1
    coords = np.argwhere(mask)
    fields = [ndimage.gaussian_filter(rng.random(SHAPE).astype(np.float32), 4)[mask] for _ in range(3)]
    codes = np.stack([(f > np.median(f)).astype(np.int64) for f in fields], 1)
    salt = rng.random(codes.shape) < 0.02
    codes[salt] = 1 - codes[salt]
    latents = rng.standard_normal((len(coords), 3, 256)).astype(np.float32)
    lc = LoadedCase("BENCH", None, struct, mask, np.eye(4), np.ones(3), brain_mask=struct[..., 0] > 0)
    return lc, codes, latents, coords


def reference_fine_strategy(lc, coarse, n_nodes, cfg, n_sample=3):
    "Seconds per habitat of SLIC on the whole normalised volume with the habitat as mask (the reference's way)."
    norm = normalize_structural(lc.structural, lc.brain_mask)
    sizes = np.bincount(coarse, minlength=n_nodes)
    big = np.flatnonzero(sizes >= 2 * cfg.supervoxel_voxels)
    pick = big[np.argsort(-sizes[big])][:n_sample]
    coords = np.argwhere(lc.mask)
    t0 = time.perf_counter()
    for c in pick:
        m = np.zeros(SHAPE, bool); m[tuple(coords[coarse == c].T)] = True
        slic(norm, n_segments=math.ceil(sizes[c] / cfg.supervoxel_voxels), compactness=cfg.compactness,
             max_num_iter=cfg.slic_max_iter, mask=m, channel_axis=-1, start_label=1)
    return (time.perf_counter() - t0) / len(pick), len(big)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    lc, codes, latents, coords = make_case()
    print(f"case: {SHAPE}, {len(coords)} tumour voxels", flush=True)
    cfg = GraphConfig()
    times, peaks = [], []
    for _ in range(a.repeats):
        tracemalloc.start()
        t0 = time.perf_counter()
        g = build_hier_graph(lc, codes, latents, coords=coords, config=cfg)
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    t0 = time.perf_counter(); coarse = habitat_components(coords, code_keys(codes, 2)); t_comp = time.perf_counter() - t0
    per_node, n_slic = reference_fine_strategy(lc, coarse, int(coarse.max()) + 1, cfg)
    ref_fine = per_node * n_slic
    print(f"graph: median {np.median(times):.2f} s, peak {max(peaks):.0f} MiB; {g.n_coarse} habitats, {g.n_fine} supervoxels", flush=True)

    model = VQVAE().eval()
    x = np.random.default_rng(0).standard_normal((50_000, 60)).astype(np.float32)
    model.encode(x[:2000])
    t0 = time.perf_counter(); model.encode(x, batch_size=8192); t_enc = time.perf_counter() - t0

    lines = ["## Graphs", "",
             "`bench/graphs.py`: the reference benchmark case (240x240x155, 4 smooth random structural channels, "
             f"ellipsoid tumour of {len(coords):,} voxels, codes from 3 smoothed (sigma 4) random binary fields with 2 % salt "
             "noise, random latents N=3, d=256), paper defaults (k=5, delta_max=15 voxels, supervoxels of about 125 voxels).", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (CPU), numpy {np.__version__}.", "",
             "| | time | peak memory |", "|---|---|---|",
             "| released reference code (quoted in the issue, same machine type) | 127 s (2.4 components + 5.9 coarse + 119 fine/SLIC) | 0.94 GB |",
             f"| hiperf_nb `build_hier_graph`, median of {a.repeats} | {np.median(times):.2f} s | {max(peaks):.0f} MiB |",
             f"| speed-up vs quoted reference | {127 / np.median(times):.0f}x | {940 / max(peaks):.1f}x less |", "",
             f"Graph: {g.n_coarse} habitats (coarse nodes), {g.n_fine} supervoxels (fine nodes), "
             f"{g['coarse', 'near', 'coarse'].num_edges} coarse and {g['fine', 'near', 'fine'].num_edges} fine edges. "
             f"Connected components alone: {t_comp:.2f} s.", "",
             f"Measured in this run, the reference's fine-graph strategy (SLIC on the whole volume with the habitat as mask): "
             f"{per_node:.2f} s per habitat (mean of the 3 largest), x {n_slic} habitats that get SLIC = about {ref_fine:.0f} s "
             f"for the fine level alone, versus {np.median(times):.2f} s for our whole graph ({ref_fine / np.median(times):.0f}x).", "",
             f"VQ-VAE encode throughput (paper configuration, CPU, T=60, batches of 8192): {len(x) / t_enc:,.0f} curves/s "
             f"({len(x):,} curves in {t_enc:.2f} s)."]
    write_section("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
