"""Float comparisons scaled to the magnitudes compared, so they hold on any CPU.

XLA picks its accumulation order by machine (AVX2 or AVX-512 kernels, thread count, batch size), so two runs of one
float32 computation differ by a few ulps of the *largest* values that were summed, not of each output. A fixed
absolute tolerance is then either meaningless for small outputs or too tight for large ones (logits of ~100).
"""
import numpy as np


def assert_close_to_scale(actual, expected, *, rtol: float, scale=None) -> None:
    """`|actual - expected| <= rtol * scale` elementwise, `scale` defaulting to `max |expected|`."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * max(scale, np.finfo(np.float32).tiny))
