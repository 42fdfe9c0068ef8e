"""FrequencyBaseline: counted table and oracle-box predictions."""

import torch

from sgg.modeling.meta_arch.frequency_baseline import FrequencyBaseline, predicate_frequency_table


def test_table_counts_and_predictions():
    dicts = [{"labels": [0, 1, 1], "relations": [[0, 1, 2], [0, 2, 2], [1, 0, 0]]},
             {"labels": [0, 1], "relations": [[0, 1, 1]]}, {"labels": [2], "relations": []}]
    table = predicate_frequency_table(dicts, num_classes=3, num_predicates=3)
    assert table[0, 1].tolist() == [0, 1, 2] and table[1, 0].tolist() == [1, 0, 0] and table.sum() == 4
    model = FrequencyBaseline(table=table).eval()
    x = {"image": torch.zeros(3, 50, 100), "height": 100, "width": 200, "image_id": 0,
         "gt_boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 10]]),
         "gt_classes": torch.tensor([0, 1, 2])}
    pred, = model([x])
    assert torch.allclose(pred["boxes"][1], torch.tensor([40.0, 40, 80, 80]))  # back to original pixels
    assert pred["rel_pairs"].shape == (6, 2) and pred["rel_scores"].shape == (6, 3)
    rows = {tuple(p): s for p, s in zip(pred["rel_pairs"].tolist(), pred["rel_scores"])}
    assert rows[(0, 1)].argmax().item() == 2 and rows[(1, 0)].argmax().item() == 0
    # (2, 0) never seen in training: the global predicate distribution [1, 1, 2] / 4.
    assert torch.allclose(rows[(2, 0)], torch.tensor([0.25, 0.25, 0.5]), atol=1e-3)
    assert torch.allclose(pred["rel_scores"].sum(1), torch.ones(6), atol=1e-5)
    model.train()
    loss = model([x])["loss_none"]
    assert loss.item() == 0.0 and loss.requires_grad
