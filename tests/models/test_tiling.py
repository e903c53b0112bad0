"""Tile layout and blending windows (numpy) and the tiled predictor (torch, CPU)."""

import numpy as np
import pytest

from napari_segkit.models.tiling import blend_weights, check_tiling, tile_layout


@pytest.mark.parametrize("shape", [(100, 37), (512, 512), (300, 1000), (20, 70, 90)])
def test_tiles_cover_and_weights_sum_positive(shape):
    sizes, overlaps = check_tiling(64, 16, len(shape))
    tiles, starts = tile_layout(shape, sizes, overlaps)
    cover = np.zeros(shape)
    for s in starts:
        index = tuple(slice(a, a + t) for a, t in zip(s, tiles, strict=True))
        assert cover[index].shape == tiles  # equal tiles, inside the image
        cover[index] += blend_weights(tiles, s, shape, overlaps)
    assert cover.min() > 0.05
    # interior tile overlaps are at least the overlap asked for
    for axis, n in enumerate(shape):
        firsts = sorted({s[axis] for s in starts})
        assert all(b - a <= tiles[axis] - 16 for a, b in zip(firsts, firsts[1:], strict=False))
        assert firsts[0] == 0 and firsts[-1] + tiles[axis] == n


def test_single_tile_has_weight_one():
    w = blend_weights((40, 50), (0, 0), (40, 50), (16, 16))
    assert (w == 1).all()


@pytest.mark.parametrize(
    ("tile", "overlap", "match"),
    [(8, 0, "tile_size"), (64, 32, "tile_overlap"), (64, -1, "tile_overlap")],
)
def test_bad_tiling(tile, overlap, match):
    with pytest.raises(ValueError, match=match):
        check_tiling(tile, overlap, 2)


def test_tiled_predictor_reproduces_a_pointwise_map_exactly():
    """A network without context (1x1) gives the same output tiled or not: the blending is exact."""
    torch = pytest.importorskip("torch")
    from napari_segkit.models.tiling import TiledPredictor, dense_maps

    conv = torch.nn.Conv2d(2, 3, 1)
    chans = np.random.default_rng(0).random((3, 90, 70, 2)).astype(np.float32)
    pred = TiledPredictor(conv, 3, tile_size=(32, 32), overlap=(8, 8), batch_size=5, multiple=16)
    seen = []
    with torch.inference_mode():
        out = dict(
            dense_maps(
                chans,
                spatial_ndim=2,
                model_ndim=2,
                prepare=lambda b: np.moveaxis(b, -1, 0),
                predictor=pred,
                device=torch.device("cpu"),
                on_batch=seen.append,
            )
        )
        for k in range(3):
            expected = conv(torch.from_numpy(np.moveaxis(chans[k], -1, 0))[None])[0].numpy()
            np.testing.assert_allclose(out[(k,)], expected, atol=1e-5)
    assert sum(seen) == 3 * pred.n_tiles((90, 70))
