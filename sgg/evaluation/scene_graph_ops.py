"""Vectorised kernels of the image scene-graph evaluator, working on *chunks* of images at once.

A chunk concatenates the per-image arrays of many images; every per-element array comes with a ``segment`` array
(the image each element belongs to, non-decreasing). The kernels rank each image's candidate pairs and match ranked
triplets against the GT relations of every image of the chunk in a fixed number of numpy calls, so the per-image cost
is the data itself and not numpy's per-call overhead (which dominated at a few hundred pairs per image).

Ordering contract (identical to ranking each image alone with stable sorts): within an image, entries are sorted by
value, descending; ties by an optional secondary value, descending; then by position in the chunk (lower pair index,
then lower predicate).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from sgg.structures.boxes import paired_iou

__all__ = [
    "NOT_HIT", "ScoreRows", "exclusive_cumsum", "row_max", "segment_kth", "sort_segments_desc", "segment_top_k",
    "no_graph_constraint_top", "first_hit_ranks",
]

NOT_HIT = np.iinfo(np.int64).max  # rank of a GT relation that no listed triplet hits
_BUCKETS = 1 << 16  # hash buckets of the GT keys in first_hit_ranks (a 64 KiB table)


def exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    """``(n,)`` counts -> ``(n,)`` int64 start offsets (0, c0, c0 + c1, ...)."""
    out = np.zeros(counts.shape[0], dtype=np.int64)
    if counts.shape[0] > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


_SAME_WIDTH_INT = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def row_max(matrix: np.ndarray) -> np.ndarray:
    """``(P, C)`` -> ``(P,)`` row maxima, equal to numpy's ``matrix.max(1)`` (NaN propagates).

    Speed: for IEEE floats >= 0 the order of the bit patterns read as signed integers is the order of the values, and
    an integer ``maximum.reduceat`` over the rows is ~3x faster than numpy's float ``max(1)`` (short rows, NaN
    handling). A row with a non-negative value has its maximum among those, so only rows of negative values (where
    the integer order is reversed) and chunks holding a NaN take the float path. (torch's ``amax`` is as fast on an
    idle machine but its worker threads spin when the CPUs are shared.)
    """
    if matrix.shape[0] == 0:
        return np.zeros(0, matrix.dtype)
    int_type = _SAME_WIDTH_INT.get(matrix.dtype)
    if int_type is None or not matrix.flags.c_contiguous or matrix.shape[1] == 0 or np.isnan(matrix.max()):
        return matrix.max(1)
    width = matrix.shape[1]
    bits = np.maximum.reduceat(matrix.view(int_type).ravel(), np.arange(0, matrix.size, width))
    best = bits.view(matrix.dtype)
    negative = np.flatnonzero(bits < 0)  # sign bit set: every value of the row is negative (or -0.0)
    if negative.size:
        best[negative] = matrix[negative].max(1)
    return best


class ScoreRows:
    """The ``(P, C)`` predicate scores of a chunk, held as consecutive row blocks (*pieces*) of several arrays.

    Small images are copied into one shared buffer (one piece for many images); large ones are referenced as they
    are (copying ~1 MB per image would cost as much as ranking it). Every piece holds whole images.

    Args:
        pieces: ``(P_i, C)`` C-contiguous arrays of one dtype, in chunk row order.
        first_images: ``(num_pieces,)`` the chunk index of each piece's first image.
    """

    def __init__(self, pieces: Sequence[np.ndarray], first_images: Sequence[int]):
        self.pieces = list(pieces)
        self.first_images = np.asarray(first_images, dtype=np.int64)
        self.row_starts = exclusive_cumsum(np.array([p.shape[0] for p in self.pieces], dtype=np.int64))
        self.num_columns = self.pieces[0].shape[1]

    def row_max(self) -> np.ndarray:
        """``(P,)`` every row's maximum (see :func:`row_max`)."""
        if len(self.pieces) == 1:
            return row_max(self.pieces[0])
        return np.concatenate([row_max(p) for p in self.pieces])

    def take(self, rows: np.ndarray, image: np.ndarray) -> np.ndarray:
        """``(len(rows), C)`` the given chunk rows; ``image`` (non-decreasing) is the image of each row."""
        if len(self.pieces) == 1:
            return np.take(self.pieces[0], rows, axis=0)
        bounds = np.searchsorted(image, self.first_images).tolist() + [rows.shape[0]]
        return np.concatenate([np.take(piece, rows[a:b] - start, axis=0) for piece, start, a, b in
                               zip(self.pieces, self.row_starts.tolist(), bounds, bounds[1:])])


def _lowest(dtype: np.dtype):
    """A value no element of ``dtype`` is below (padding for partitions)."""
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def segment_kth(values: np.ndarray, sizes: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    """``(num_segments,)`` the ``k``-th largest value of every segment (``k >= 1``).

    Segments with at most ``k`` values get the dtype's lowest value, so ``values >= kth[segment]`` keeps all of them.
    Equal-sized segments covering ``values`` are partitioned as one matrix in one call; otherwise each larger segment
    is partitioned alone (padding unequal segments into a matrix makes the partition ~3x slower per value: many equal
    pad values).

    Args:
        values: ``(n,)`` concatenated segment values.
        sizes, starts: ``(num_segments,)`` length and offset of every segment in ``values``.
    """
    kth = np.full(sizes.shape[0], _lowest(values.dtype), dtype=values.dtype)
    large = np.flatnonzero(sizes > k)
    if large.size == 0:
        return kth
    # non-negative floats partition ~2x faster as their bit patterns (integers, same order; -0.0 sorts below 0.0 but
    # compares equal to it, so the threshold is the same)
    int_type = _SAME_WIDTH_INT.get(values.dtype)
    search = values.view(int_type) if int_type is not None and values.min() >= 0 else values
    found = np.empty(large.size, dtype=search.dtype)
    width = int(sizes[large[0]])
    if large.size == sizes.shape[0] and bool((sizes == width).all()):  # one matrix, rows = segments
        found[:] = np.partition(search.reshape(-1, width), width - k, axis=1)[:, width - k]
    else:
        for j, (start, size) in enumerate(zip(starts[large].tolist(), sizes[large].tolist())):
            found[j] = np.partition(search[start:start + size], size - k)[size - k]
    kth[large] = found.view(values.dtype)
    return kth


def _descending_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> uint64 (< 2**32) whose ascending order is the values' descending order (equal values, equal keys)."""
    bits = (values + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into 0.0: they compare equal
    negative = bits >= np.uint32(0x80000000)
    ascending = np.where(negative, ~bits, bits | np.uint32(0x80000000))  # IEEE order as unsigned order
    return (~ascending).astype(np.uint64)


def sort_segments_desc(values: np.ndarray, segment: np.ndarray, num_segments: int,
                       secondary: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Order of the elements by (segment, value desc[, secondary desc], position) and each one's rank in its segment.

    float32 values take the fast path: one ``np.sort`` (SIMD) of unique uint64 keys ``segment | value | position``,
    ~10x faster than ``np.lexsort``; runs of equal (segment, value) are then re-ordered by ``secondary``. Other
    dtypes (or chunks too large for 64-bit keys) use ``np.lexsort``.

    Returns:
        ``order`` (n,) indices into ``values`` and ``rank`` (n,) int64, the 0-based rank of ``values[order[i]]``
        within its segment.
    """
    n = values.shape[0]
    position_bits = max(n - 1, 1).bit_length()
    if values.dtype == np.float32 and max(num_segments - 1, 1).bit_length() + 32 + position_bits <= 64:
        high = (segment.astype(np.uint64) << np.uint64(32)) | _descending_bits(values)
        keys = np.sort((high << np.uint64(position_bits)) | np.arange(n, dtype=np.uint64))
        order = (keys & np.uint64((1 << position_bits) - 1)).astype(np.int64)
        if secondary is not None:
            _order_ties_by(order, keys >> np.uint64(position_bits), secondary)
    else:
        keys = (-values, segment) if secondary is None else (-secondary, -values, segment)
        order = np.lexsort(keys)  # stable: equal keys keep their position (lower index first)
    counts = np.bincount(segment, minlength=num_segments)
    rank = np.arange(n) - exclusive_cumsum(counts)[segment[order]]
    return order, rank


def _order_ties_by(order: np.ndarray, sorted_keys: np.ndarray, secondary: np.ndarray) -> None:
    """Within each run of equal ``sorted_keys``, re-order ``order`` (in place) by ``secondary`` desc, then index."""
    equal = sorted_keys[1:] == sorted_keys[:-1]
    if not equal.any():
        return
    tied = np.zeros(order.shape[0], dtype=bool)
    tied[1:] = equal
    tied[:-1] |= equal
    slots = np.flatnonzero(tied)
    run = np.cumsum(np.concatenate([[True], ~equal]))[slots]  # id of each tied element's run
    index = order[slots]
    order[slots] = index[np.lexsort((index, -secondary[index], run))]


def segment_top_k(values: np.ndarray, segment: np.ndarray, sizes: np.ndarray, starts: np.ndarray,
                  k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest values of every segment (all if ``k <= 0``), best first, ties by lower index.

    Equal to the first ``k`` entries of a stable descending sort of each segment alone: only the values reaching the
    segment's k-th largest (ties included) are sorted.

    Returns:
        ``index`` (m,) into ``values``, segment-major, and ``rank`` (m,) the 0-based rank within the segment.
    """
    if k > 0:
        kth = segment_kth(values, sizes, starts, k)
        candidates = np.flatnonzero(values >= np.repeat(kth, sizes))  # segments are contiguous
    else:
        candidates = np.arange(values.shape[0])
    order, rank = sort_segments_desc(values[candidates], segment[candidates], sizes.shape[0])
    index = candidates[order]
    if k > 0:
        keep = rank < k
        index, rank = index[keep], rank[keep]
    return index, rank


def no_graph_constraint_top(pair_mult: np.ndarray, best: np.ndarray, rel_scores: ScoreRows, triplet: np.ndarray,
                            segment: np.ndarray, sizes: np.ndarray, starts: np.ndarray,
                            k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` (pair, predicate) combinations of every image by ``(s_sub * s_obj) * p``.

    Ties go to the pair ranked first by the graph-constrained ``triplet`` score, then the lower pair index, then the
    lower predicate (the reference ranks the combinations of its post-processor's sorted pair list). Only pairs whose
    best combination reaches the image's k-th best pair's best can contribute (multiplying by a non-negative score is
    monotone, so a pair's combinations never beat its best one), which bounds the work by ~k pairs per image; the
    image's k-th largest combination of those then leaves ~k combinations to sort.

    Args:
        pair_mult: ``(P,)`` ``s_sub * s_obj`` of the chunk's pairs; ``best`` ``(P,)`` their row maxima;
        rel_scores: ``(P, C)`` scores; ``triplet`` ``(P,)`` graph-constrained scores; ``segment`` ``(P,)`` image of each
            pair; ``sizes`` / ``starts`` ``(num_images,)`` pairs per image and their offsets.

    Returns:
        ``pair`` (m,) chunk pair index, ``predicate`` (m,), ``score`` (m,) and ``rank`` (m,) within the image,
        image-major, best first.
    """
    num_predicates = rel_scores.num_columns
    num_images = sizes.shape[0]
    if k > 0:
        pair_best = pair_mult * best  # == each pair's best combination, bit for bit
        candidates = np.flatnonzero(pair_best >= np.repeat(segment_kth(pair_best, sizes, starts, k), sizes))
    else:
        candidates = np.arange(pair_mult.shape[0])
    image = segment[candidates]
    combos = pair_mult[candidates, None] * rel_scores.take(candidates, image)  # (candidates, C)
    if k > 0:
        # an image's candidate combinations hold its k best (each non-candidate's best is below them), so their k-th
        # largest is the image's; every image's combinations are contiguous rows of ``combos``
        counts = np.bincount(image, minlength=num_images) * num_predicates
        kth = segment_kth(combos.ravel(), counts, exclusive_cumsum(counts), k)
        kept = np.flatnonzero(combos >= kth[image][:, None])
    else:
        kept = np.arange(combos.size)
    row, predicate = np.divmod(kept, num_predicates)
    pair, image, score = candidates[row], image[row], combos.ravel()[kept]
    order, rank = sort_segments_desc(score, image, num_images, secondary=triplet[pair])
    if k > 0:
        order, rank = order[rank < k], rank[rank < k]
    return pair[order], predicate[order], score[order], rank


def first_hit_ranks(gt_key: np.ndarray, gt_sub_box: np.ndarray, gt_obj_box: np.ndarray, list_key: np.ndarray,
                    list_sub: np.ndarray, list_obj: np.ndarray, list_rank: np.ndarray, boxes: np.ndarray,
                    iou_threshold: float, list_group: Optional[np.ndarray] = None, num_groups: int = 1) -> np.ndarray:
    """For every GT relation and list, the smallest rank of a listed triplet of its image that hits it (``NOT_HIT``
    if none).

    Keys encode (image, subject label, object label, predicate), so a hit needs equal keys plus IoU >= threshold for
    both boxes (+1-pixel convention, float32 like the reference). The few GT keys are sorted and hashed; listed
    triplets whose bucket holds a GT key are looked up with ``searchsorted``; IoUs are computed only for the
    (GT, listed) pairs with equal keys. Several lists are matched at once by tagging their entries with ``list_group``.

    Args:
        gt_key: ``(R,)`` int64 (non-negative); ``gt_sub_box`` / ``gt_obj_box`` ``(R, 4)`` float32.
        list_key: ``(L,)`` int64; ``list_sub`` / ``list_obj`` ``(L,)`` rows of ``boxes`` ``(M, 4)`` float32;
            ``list_rank`` ``(L,)``; ``list_group`` ``(L,)`` in ``[0, num_groups)`` (default: all 0).

    Returns:
        ``(num_groups, R)`` int64 (``(R,)`` when ``list_group`` is None).
    """
    first = np.full((num_groups, gt_key.shape[0]), NOT_HIT, dtype=np.int64)
    if gt_key.size and list_key.size:
        # most listed triplets match no GT key: a 64 Ki-bucket hash filter drops them before the binary searches
        occupied = np.zeros(_BUCKETS, dtype=bool)
        occupied[gt_key & (_BUCKETS - 1)] = True
        maybe = np.flatnonzero(occupied[list_key & (_BUCKETS - 1)])
        gt_order = np.argsort(gt_key, kind="stable")
        sorted_keys = gt_key[gt_order]
        lo = np.searchsorted(sorted_keys, list_key[maybe], side="left")
        counts = np.searchsorted(sorted_keys, list_key[maybe], side="right") - lo
        found = np.flatnonzero(counts)
        listed, lo, counts = maybe[found], lo[found], counts[found]
        entry = np.repeat(listed, counts)
        gt = gt_order[np.repeat(lo - exclusive_cumsum(counts), counts) + np.arange(entry.shape[0])]
        threshold = np.float32(iou_threshold)  # float32 comparison, like the reference's numpy code
        ok = paired_iou(gt_sub_box[gt], boxes[list_sub[entry]], plus_one=True) >= threshold
        ok &= paired_iou(gt_obj_box[gt], boxes[list_obj[entry]], plus_one=True) >= threshold
        entry, gt = entry[ok], gt[ok]
        group = 0 if list_group is None else list_group[entry]
        np.minimum.at(first.reshape(-1), group * gt_key.shape[0] + gt, list_rank[entry])
    return first[0] if list_group is None else first
