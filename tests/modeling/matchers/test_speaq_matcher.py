"""SpeaQ's predicate groups, query counts, group mask and one-to-many replication."""

import pytest
import torch

from sgg.modeling.matchers.hungarian import IterativeHungarianMatcher, triplet_cost_matrices
from sgg.modeling.matchers.speaq import (
    SpeaQMatcher,
    one_to_many_counts,
    predicate_groups,
    queries_per_group,
    query_group_ids,
)
from sgg.structures.boxes import box_cxcywh_to_xyxy, pairwise_iou

# VG150 training-set predicate counts as listed in SpeaQ's matcher (mlvlab/SpeaQ, modeling/transformer/matcher.py).
VG_COUNTS = {
    "on": 712409, "has": 277936, "in": 251756, "of": 146339, "wearing": 136099, "near": 96589, "with": 66425,
    "above": 47341, "holding": 42722, "behind": 41356, "under": 22596, "sitting on": 18643, "wears": 15457,
    "standing on": 14185, "in front of": 13715, "attached to": 10190, "at": 9903, "hanging from": 9894,
    "over": 9317, "for": 9145, "riding": 8856, "carrying": 5213, "eating": 4688, "walking on": 4613, "playing": 3810,
    "covering": 3806, "laying on": 3739, "along": 3624, "watching": 3490, "and": 3477, "between": 3411,
    "belonging to": 3288, "painted on": 3095, "against": 3092, "looking at": 3083, "from": 2945, "parked on": 2721,
    "to": 2517, "made of": 2380, "covered in": 2312, "mounted on": 2253, "says": 2241, "part of": 2065,
    "across": 1996, "flying in": 1973, "using": 1925, "on back of": 1914, "lying on": 1869, "growing on": 1853,
    "walking in": 1740,
}
VG_NAMES = sorted(VG_COUNTS)  # VG150's predicate index order is alphabetical
VG_FREQ = [VG_COUNTS[n] for n in VG_NAMES]


def test_vg_groups_and_query_counts_match_speaq():
    groups = predicate_groups(VG_FREQ, 4)
    named = [{VG_NAMES[i] for i in g} for g in groups]
    assert named[:3] == [{"on", "has"}, {"in", "of"}, {"wearing", "near", "with"}]
    assert len(named[3]) == 43 and sorted(i for g in groups for i in g) == list(range(50))
    counts = queries_per_group(VG_FREQ, groups, 300)
    assert counts == [145, 58, 44, 53]
    ids = query_group_ids(counts, 2)
    assert len(ids) == 600 and torch.bincount(ids).tolist() == [290, 116, 88, 106]
    assert torch.all(ids[1:] >= ids[:-1])  # consecutive blocks


def test_groups_on_hand_made_frequencies():
    # sorted: 50, 30, 10, 6, 4 (total 100). Group 1: running sum + next < 100 // 2 = 50 -> nothing fits, but a group
    # is never empty -> {0}. Remaining 50: half 25 -> {30} would exceed -> forced {1}. Last: the rest.
    freq = [50, 30, 10, 6, 4]
    assert predicate_groups(freq, 3) == [[0], [1], [2, 3, 4]]
    # Even frequencies: half of 80 is 40 -> 10 + 10 + 10 < 40, the 4th would reach 40 -> 3 predicates.
    freq = [10] * 8
    assert predicate_groups(freq, 2) == [[0, 1, 2], [3, 4, 5, 6, 7]]
    # Order is by decreasing count, ties by index; zero counts go to the last group.
    assert predicate_groups([1, 5, 0, 5, 100], 2) == [[4], [1, 3, 0, 2]]
    assert predicate_groups([3, 2, 1], 1) == [[0, 1, 2]]
    # Query counts: floor of the share, remainder from the last group backwards.
    assert queries_per_group([50, 30, 20], [[0], [1], [2]], 10) == [5, 3, 2]
    assert queries_per_group([1, 1, 1], [[0], [1], [2]], 10) == [3, 3, 4]
    assert queries_per_group([1, 1, 1], [[0], [1], [2]], 11) == [3, 4, 4]
    with pytest.raises(ValueError, match="at least one"):
        queries_per_group([1000, 1, 1], [[0], [1], [2]], 2)
    with pytest.raises(ValueError, match="NUM_GROUPS"):
        predicate_groups([1, 2], 3)
    with pytest.raises(ValueError, match="frequencies"):
        predicate_groups([1, float("nan")], 1)


def test_one_to_many_counts():
    quality = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.0, 0.0], [0.6, 0.0, 0.0], [0.5, 0.3, 0.0]])
    # top-4 sums: 3.0 -> 3 ; 0.6 -> max(1, 0) = 1 ; 0 -> 1
    assert one_to_many_counts(quality, 4).tolist() == [3, 1, 1]
    assert one_to_many_counts(quality, 2).tolist() == [1, 1, 1]  # 1.7 -> 1
    assert one_to_many_counts(quality[:1], 4).tolist() == [1, 1, 1]  # fewer queries than k
    assert one_to_many_counts(torch.zeros(4, 0), 4).numel() == 0


def _outputs_and_target():
    """4 relation queries in 2 groups (2 + 2); predicates 0, 1 -> group 0, predicate 2 -> group 1."""
    q = 4
    gt_sub = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    gt_obj = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.2, 0.8, 0.2, 0.2]])
    target = {"sub_labels": torch.tensor([0, 1]), "obj_labels": torch.tensor([1, 2]),
              "rel_labels": torch.tensor([2, 0]),
              "sub_boxes": gt_sub, "obj_boxes": gt_obj, "rel_boxes": torch.tensor([[0.4, 0.4, 0.2, 0.2]] * 2)}
    out = {"sub_logits": torch.zeros(1, q, 4), "obj_logits": torch.zeros(1, q, 4), "rel_logits": torch.zeros(1, q, 4),
           "sub_boxes": torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2],
                                       [0.31, 0.3, 0.2, 0.2]]]),
           "obj_boxes": torch.full((1, q, 4), 0.5), "rel_boxes": torch.full((1, q, 4), 0.4)}
    out["obj_boxes"][..., 2:] = 0.2
    out["rel_boxes"][..., 2:] = 0.2
    return out, target


def _matcher(scheme, mask=True, k=4):
    return SpeaQMatcher(predicate_group=torch.tensor([0, 0, 1]), query_group=torch.tensor([0, 0, 1, 1]),
                        use_group_mask=mask, one2many_scheme=scheme, one2many_k=k)


def test_group_mask_forbids_cross_group_matches():
    out, target = _outputs_and_target()
    (indices, tgts), = _matcher("none")([out], [target])
    rows, cols = indices[0]
    # GT 0 (predicate 2, group 1) may only take queries 2/3 although query 1 fits its boxes as well; GT 1 (group 0)
    # may only take queries 0/1 and query 0 has its subject box exactly.
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}
    # Without the mask the optimum is unconstrained (brute force over the unmasked costs).
    (indices, _), = _matcher("none", mask=False)([out], [target])
    cost, = triplet_cost_matrices(out, [target], cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    best = min(cost[i, 0] + cost[j, 1] for i in range(4) for j in range(4) if i != j)
    r, c = indices[0]
    assert cost[r, c].sum().item() == pytest.approx(best.item(), abs=1e-5)


def test_static_and_dynamic_replication():
    out, target = _outputs_and_target()
    (indices, tgts), = _matcher("static", mask=False, k=2)([out], [target])
    assert tgts[0]["rel_labels"].tolist() == [2, 2, 0, 0] and tgts[0]["replication"].tolist() == [2, 2]
    assert len(indices[0][0]) == 4 and len(set(indices[0][0].tolist())) == 4  # 4 distinct queries, one per copy
    # Dynamic: quality = max(IoU_sub, IoU_obj) per query. GT 0 (group 1: queries 2, 3): query 2 has IoU_sub 1,
    # query 3 ~0.9 -> int(1.9) = 1 copy... compute it independently and compare.
    (indices, tgts), = _matcher("dynamic", mask=True)([out], [target])
    q = torch.maximum(pairwise_iou(box_cxcywh_to_xyxy(out["sub_boxes"][0]), box_cxcywh_to_xyxy(target["sub_boxes"])),
                      pairwise_iou(box_cxcywh_to_xyxy(out["obj_boxes"][0]), box_cxcywh_to_xyxy(target["obj_boxes"])))
    allowed = torch.tensor([[False, True], [False, True], [True, False], [True, False]])
    expected = [max(1, int((q[:, j] * allowed[:, j]).sort(descending=True).values[:4].sum())) for j in range(2)]
    assert tgts[0]["replication"].tolist() == expected
    assert expected[0] == 2  # queries 2 and 3 both overlap GT 0 well -> two copies
    rows, cols = indices[0]
    groups = torch.tensor([0, 0, 1, 1])
    assert all(groups[r] == (1 if tgts[0]["rel_labels"][c] == 2 else 0) for r, c in zip(rows.tolist(), cols.tolist()))


def test_dynamic_counts_of_a_batch_equal_per_image_counts():
    """The batched IoU computation gives each image exactly its own counts, also next to an image without
    relations (and for a batch where no image has any)."""
    gen = torch.Generator().manual_seed(0)
    outputs = {s: torch.rand(4, 6, 4, generator=gen) * 0.5 + 0.2 for s in ("sub_boxes", "obj_boxes")}
    targets = [{"sub_boxes": torch.rand(n, 4, generator=gen) * 0.5 + 0.2,
                "obj_boxes": torch.rand(n, 4, generator=gen) * 0.5 + 0.2,
                "rel_labels": torch.zeros(n, dtype=torch.int64)} for n in (3, 0, 5, 1)]
    matcher = _matcher("dynamic", mask=False)
    counts = matcher.replication_counts(outputs, targets, None)
    for b, t in enumerate(targets):
        q = torch.maximum(*(pairwise_iou(box_cxcywh_to_xyxy(outputs[k][b]), box_cxcywh_to_xyxy(t[k]))
                            for k in ("sub_boxes", "obj_boxes")))
        assert torch.equal(counts[b], one_to_many_counts(q, 4))
    assert counts[1].numel() == 0 and max(c.max() for c in counts if c.numel()) >= 2
    empty = [{k: v[:0] for k, v in t.items()} for t in targets]
    assert [c.numel() for c in matcher.replication_counts(outputs, empty, None)] == [0, 0, 0, 0]


def test_more_copies_than_group_queries_are_dropped_not_cross_matched():
    out, target = _outputs_and_target()
    (indices, tgts), = _matcher("static", mask=True, k=3)([out], [target])
    rows, cols = indices[0]
    groups = torch.tensor([0, 0, 1, 1])
    assert len(rows) == 4  # 6 copies, but each group has only 2 queries
    for r, c in zip(rows.tolist(), cols.tolist()):
        assert groups[r] == (1 if tgts[0]["rel_labels"][c] == 2 else 0)


def test_speaq_matcher_checks_query_count_and_options():
    out, target = _outputs_and_target()
    m = SpeaQMatcher(predicate_group=torch.tensor([0, 0, 1]), query_group=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="relation queries"):
        m([out], [target])
    with pytest.raises(ValueError, match="ONE2MANY_SCHEME"):
        _matcher("sometimes")
    assert isinstance(m, IterativeHungarianMatcher)
