"""How a raw mammogram is windowed when its header has no VOI window."""

import numpy as np

from mammo_denoise.napari._layers import image_layer_kwargs, robust_limits
from mammo_denoise.physics.phantom import make_phantom


def test_raw_window_covers_the_breast_not_the_open_field_or_collimator():
    phantom = make_phantom(seed=0, shape=(512, 384))
    lo, hi = image_layer_kwargs(phantom.noisy, phantom.meta)["contrast_limits"]
    breast_lo, breast_hi = np.percentile(phantom.noisy[phantom.mask], [1, 99])
    assert lo > phantom.params.offset + 10 * phantom.params.electronic_sigma  # not the collimator
    assert hi < 0.7 * phantom.noisy.max()  # not the direct-exposure field
    assert lo <= breast_lo * 1.1 and hi >= 0.5 * breast_hi
    # The plain percentile window would have spent the grey scale on the two plateaus.
    naive_lo, naive_hi = robust_limits(phantom.noisy)
    assert (hi - lo) < 0.7 * (naive_hi - naive_lo)
