"""Class weights of the cross-entropy losses (sgg.modeling.losses)."""

import math

import numpy as np
import pytest
import torch

from sgg.modeling.losses import check_predicate_frequencies, class_weights_with_background, relation_class_weights


def test_class_weights_with_background():
    w = class_weights_with_background(3, 0.25)
    assert w.dtype == torch.float32 and w.tolist() == [1.0, 1.0, 1.0, 0.25]


def test_relation_class_weights_formula():
    freq = [70, 20, 9, 1, 0]  # shares 0.7, 0.2, 0.09, 0.01, 0
    w = relation_class_weights(freq, oversample=0.07, undersample=1.5, no_relation_weight=0.1)
    share = np.array(freq[:4]) / 100
    expected = np.maximum(np.sqrt(0.07 / share), 1.0) ** 1.5
    assert w[:4].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert w[4].item() == 1.0 and w[5].item() == pytest.approx(0.1)
    assert w[3].item() == pytest.approx(math.sqrt(7) ** 1.5, rel=1e-5)
    assert torch.all(relation_class_weights(freq, 0.0, 1.5)[:5] == 1)


@pytest.mark.parametrize("freq", [[], [1, float("nan")], [1, -1], [0, 0], [1, float("inf")]])
def test_predicate_frequencies_are_checked(freq):
    with pytest.raises(ValueError, match="predicate frequencies"):
        check_predicate_frequencies(freq)
    with pytest.raises(ValueError, match="predicate frequencies"):
        relation_class_weights(freq, 0.07, 0.75)
