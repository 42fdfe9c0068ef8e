"""sgg.modeling.tracking: DSG-DETR's Hungarian tracker on hand-made sequences (crossing objects, occlusion gaps,
expiry, the acceptance rule), the class / no-tracking alternatives and the identity metrics."""

import pytest
import torch

from sgg.modeling.tracking import HungarianTracker, group_by_class, no_tracking, track_boxes, tracking_errors


def flat(frames):
    """[[(box xyxy, label, feature), ...] per frame] -> boxes (N, 4), frame_idx (N,), labels (N,), features (N, F)."""
    boxes, idx, labels, feats = [], [], [], []
    for t, objs in enumerate(frames):
        for box, label, feat in objs:
            boxes.append(box)
            idx.append(t)
            labels.append(label)
            feats.append(feat)
    return (torch.tensor(boxes, dtype=torch.float32), torch.tensor(idx), torch.tensor(labels),
            torch.tensor(feats, dtype=torch.float32))


def box_at(cx, cy=0.5, w=0.2, h=0.2):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


A_FEAT, B_FEAT = [1.0, 0.0, 0.1], [0.0, 1.0, 0.1]


def crossing(num_frames=7):
    """Two cups (same class 3) moving towards each other on one line; they cross at frame 3. Row order within a frame
    alternates so the order of rows gives no hint."""
    frames = []
    for t in range(num_frames):
        a = (box_at(0.2 + 0.1 * t), 3, A_FEAT)
        b = (box_at(0.8 - 0.1 * t), 3, B_FEAT)
        frames.append([a, b] if t % 2 == 0 else [b, a])
    gt = [0 if (t % 2 == 0) == (k == 0) else 1 for t in range(num_frames) for k in range(2)]
    return frames, gt


def test_crossing_same_class_objects_keep_their_identities():
    frames, gt = crossing()
    boxes, idx, labels, feats = flat(frames)
    ids = HungarianTracker()(boxes, idx, labels, feats)
    assert tracking_errors(ids, gt, idx)["id_switches"] == 0
    assert len(ids.unique()) == 2
    # Grouping by class merges both cups into one "track": purity drops to 1/2, no switches are possible.
    by_class = tracking_errors(group_by_class(labels), gt, idx)
    assert by_class["pred_tracks"] == 1 and by_class["purity"] == pytest.approx(0.5)
    assert by_class["conflicts"] == 7 and by_class["mota"] == pytest.approx(0.0)  # per frame one cup: miss + FP


def test_occlusion_gap_shorter_than_max_age_keeps_the_track_and_longer_gap_expires():
    # One chair (class 5) seen at frames 0, 1, then hidden for frames 2-4, then seen again at 5, 6; a person (0) is
    # always there. Frame numbers step by 10.
    chair, person = [0.9, 0.1, 0.1], [0.1, 0.1, 0.9]
    frames = []
    for t in range(7):
        objs = [(box_at(0.3, 0.4, 0.2, 0.6), 0, person)]
        if t not in (2, 3, 4):
            objs.append((box_at(0.7 + 0.01 * t), 5, chair))
        frames.append(objs)
    boxes, idx, labels, feats = flat(frames)
    numbers = [10 * t for t in range(7)]
    kept = HungarianTracker(max_age=50)(boxes, idx, labels, feats, numbers)  # gap 10 -> 50 = 40 frame numbers
    chair_ids = kept[labels == 5]
    assert len(chair_ids.unique()) == 1
    expired = HungarianTracker(max_age=30)(boxes, idx, labels, feats, numbers)
    chair_ids = expired[labels == 5]
    assert chair_ids[:2].unique().tolist() == [int(chair_ids[0])] and int(chair_ids[2]) != int(chair_ids[0])
    assert len(expired[labels == 0].unique()) == 1  # the person, matched every frame, never expires


def test_expiry_counts_original_frame_numbers_not_frame_indices():
    frames = [[(box_at(0.5), 2, A_FEAT)], [(box_at(0.5), 2, A_FEAT)]]
    boxes, idx, labels, feats = flat(frames)
    # The object is matched at frame 1, so the track is alive however far apart the frame numbers are.
    assert len(HungarianTracker(max_age=50)(boxes, idx, labels, feats, [0, 500]).unique()) == 1
    frames = [[(box_at(0.5), 2, A_FEAT)], [(box_at(0.2), 4, B_FEAT)], [(box_at(0.5), 2, A_FEAT)]]
    boxes, idx, labels, feats = flat(frames)
    # Frame 1 has a different object (new track, rejected by class and feature); at frame 2 the first object is
    # back. Expiry is decided at the end of each frame, as upstream: frame 1 at number 10 keeps the unmatched track
    # (10 < 50), at number 50 drops it (50 >= 50), so the object comes back under a new id.
    alive = HungarianTracker(max_age=50)(boxes, idx, labels, feats, [0, 10, 20])
    assert alive.tolist() == [0, 1, 0]
    gone = HungarianTracker(max_age=50)(boxes, idx, labels, feats, [0, 50, 60])
    assert gone.tolist() == [0, 1, 2]


def test_acceptance_needs_the_class_or_the_feature_to_agree():
    # Same place, different class and orthogonal feature: the assignment is rejected, a new track starts.
    frames = [[(box_at(0.5), 1, A_FEAT)], [(box_at(0.5), 7, B_FEAT)]]
    assert HungarianTracker()(*flat(frames)).tolist() == [0, 1]
    # Different class but the same appearance: accepted (feature cost 0 < 0.5), even far away.
    frames = [[(box_at(0.2), 1, A_FEAT)], [(box_at(0.8), 7, A_FEAT)]]
    assert HungarianTracker()(*flat(frames)).tolist() == [0, 0]
    # Same class, orthogonal feature: accepted by the class rule.
    frames = [[(box_at(0.2), 1, A_FEAT)], [(box_at(0.8), 1, B_FEAT)]]
    assert HungarianTracker()(*flat(frames)).tolist() == [0, 0]


def test_assignment_is_the_global_optimum_of_the_weighted_cost():
    # Track 0 at x=0.40, track 1 at x=0.62. New boxes at x=0.50 and x=0.72 (same class, same features): a greedy
    # nearest-first match would give 0.62 -> 0.50 (distance 0.12 vs 0.10 from 0.40)... the optimal total is 0->0.5,
    # 1->0.72.
    f = [1.0, 0.0, 0.0]
    frames = [[(box_at(0.40), 2, f), (box_at(0.62), 2, f)], [(box_at(0.50), 2, f), (box_at(0.72), 2, f)]]
    assert HungarianTracker()(*flat(frames)).tolist() == [0, 1, 0, 1]
    tracker = HungarianTracker(cost_class=0.5, cost_feature=1, cost_l1=1, cost_giou=0.5)
    boxes, idx, labels, feats = flat(frames)
    from sgg.modeling.tracking import _Track  # the cost matrix against two hand-built tracks

    classes = torch.nn.functional.one_hot(labels, 36).float()
    tracks = [_Track(boxes[0], feats[0], classes[0], 1, 0), _Track(boxes[1], feats[1], classes[1], 1, 0)]
    c = tracker.costs(boxes[2:], classes[2:], feats[2:], tracks)
    assert torch.allclose(c["class"], torch.zeros(2, 2), atol=1e-6)
    assert c["l1"][0, 0] == pytest.approx(0.10, abs=1e-5) and c["l1"][0, 1] == pytest.approx(0.12, abs=1e-5)
    assert torch.allclose(c["total"], 0.5 * c["class"] + c["feature"] + c["l1"] + 0.5 * c["giou"])


def test_dispatch_and_bad_inputs():
    frames, _ = crossing(3)
    boxes, idx, labels, feats = flat(frames)
    kw = dict(boxes=boxes, frame_idx=idx, labels=labels, features=feats)
    assert track_boxes("none", **kw).tolist() == no_tracking(6).tolist() == list(range(6))
    assert track_boxes("class", **kw).tolist() == [0] * 6
    assert len(track_boxes("hungarian", **kw).unique()) == 2
    with pytest.raises(ValueError, match="MODEL.DSGDETR.TRACKING"):
        track_boxes("sort", **kw)
    with pytest.raises(ValueError, match="grouped by frame"):
        HungarianTracker()(boxes.flip(0), idx.flip(0), labels, feats)
    with pytest.raises(ValueError, match="TRACK_COSTS"):
        HungarianTracker(cost_class=0, cost_feature=0, cost_l1=0, cost_giou=0)
    with pytest.raises(ValueError, match="TRACK_MAX_AGE"):
        HungarianTracker(max_age=0)
    assert HungarianTracker()(boxes[:0], idx[:0], labels[:0], feats[:0]).numel() == 0


def test_tracking_errors_counts_switches_purity_and_fragmentation():
    # GT: objects 0 and 1 over 4 frames. Prediction swaps their ids from frame 2 on: 2 switches (one per object).
    gt = [0, 1, 0, 1, 0, 1, 0, 1]
    frames = [0, 0, 1, 1, 2, 2, 3, 3]
    pred = [5, 6, 5, 6, 6, 5, 6, 5]
    e = tracking_errors(pred, gt, frames)
    assert e["id_switches"] == 2 and e["conflicts"] == 0 and e["mota"] == pytest.approx(1 - 2 / 8)
    assert e["purity"] == pytest.approx(0.5) and e["fragmentations"] == 2
    perfect = tracking_errors([3, 4] * 4, gt, frames)
    assert perfect["id_switches"] == 0 and perfect["purity"] == perfect["completeness"] == 1.0
    split = tracking_errors(list(range(8)), gt, frames)  # no tracking: every box alone
    assert split["id_switches"] == 6 and split["completeness"] == pytest.approx(0.25)
    # One track for both objects: per frame one is matched, the other is a miss + a false positive.
    merged = tracking_errors([9] * 8, gt, frames)
    assert merged["conflicts"] == 4 and merged["id_switches"] == 0 and merged["mota"] == pytest.approx(0.0)
