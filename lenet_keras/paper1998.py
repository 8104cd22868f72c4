"""The numbers of LeCun et al.'s 1998 LeNet-5 that both engines share, without TensorFlow.

Source: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11):2278-2324, 1998: section II.B, Table I, Appendix A, Fig. 3.
`lenet_keras.lenet1998` (Keras) and `lenet_keras.scratch.lenet1998` (NumPy) build the network from
these; the NumPy engine must not import TensorFlow, so they live here.
"""

from __future__ import annotations

import numpy as np

SQUASH_AMPLITUDE = 1.7159
"""A of f(a) = A tanh(S a) (Appendix A)."""
SQUASH_SLOPE = 2.0 / 3.0
"""S of f(a) = A tanh(S a) (Appendix A)."""
INITIAL_RANGE = 2.4
"""Weights start uniform in +-INITIAL_RANGE / fan-in (Appendix A)."""
BACKGROUND, INK = -0.1, 1.175
"""Input levels of a white pixel and a black one (section II.B: mean about 0, variance about 1)."""

C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
"""Table I: the S2 maps (0-5) each C3 map (0-15) combines: maps 0-5 three contiguous maps, 6-11
four contiguous, 12-14 four non-contiguous, 15 all six (60 connections)."""

DIGIT_BITMAPS = (
    # 0        1          2          3          4          5          6          7          8          9
    ("..###..", "...#...", "..###..", "..###..", "....#..", "#######", "..###..", "#######", "..###..", "..###.."),
    (".#...#.", "..##...", ".#...#.", ".#...#.", "...##..", "#......", ".#.....", "......#", ".#...#.", ".#...#."),
    ("#.....#", ".#.#...", "#.....#", "#.....#", "..#.#..", "#......", "#......", ".....#.", "#.....#", "#.....#"),
    ("#.....#", "...#...", "......#", "......#", ".#..#..", "#......", "#......", ".....#.", "#.....#", "#.....#"),
    ("#.....#", "...#...", ".....#.", ".....#.", "#...#..", "######.", "#.###..", "....#..", ".#...#.", "#.....#"),
    ("#.....#", "...#...", "....#..", "..###..", "#######", "......#", "##...#.", "....#..", "..###..", ".#...##"),
    ("#.....#", "...#...", "...#...", ".....#.", "....#..", "......#", "#.....#", "...#...", ".#...#.", "..###.#"),
    ("#.....#", "...#...", "..#....", "......#", "....#..", "......#", "#.....#", "...#...", "#.....#", "......#"),
    ("#.....#", "...#...", ".#.....", "......#", "....#..", "......#", "#.....#", "..#....", "#.....#", "......#"),
    ("#.....#", "...#...", "#......", "#.....#", "....#..", "#.....#", "#.....#", "..#....", "#.....#", ".....#."),
    (".#...#.", "...#...", "#......", ".#...#.", "....#..", ".#...#.", ".#...#.", ".#.....", ".#...#.", "....#.."),
    ("..###..", ".#####.", "#######", "..###..", "....#..", "..###..", "..###..", ".#.....", "..###..", "###...."),
)
"""7x12 bitmaps of the digits 0-9, drawn for this package after the paper's Fig. 3 (its bitmaps
are not published as data): row r of digit d is `DIGIT_BITMAPS[r][d]`, '#' ink, '.' background."""


def digit_codes() -> np.ndarray:
    """The RBF output units' fixed parameter vectors: float32 (10, 84), +1 for ink and -1 for
    background of `DIGIT_BITMAPS`, row by row (84 = 12 rows x 7 columns, F6's 84 units)."""
    return np.array([[1.0 if pixel == "#" else -1.0 for row in DIGIT_BITMAPS for pixel in row[digit]]
                     for digit in range(10)], dtype=np.float32)


CURVATURE_STREAM = 6
"""The random stream of the curvature draw (`curvature_draw`; `augment`'s streams use 0-5, 7, 8)."""


def curvature_draw(seed: int, epoch: int, count: int, patterns: int) -> np.ndarray:
    """Indices (min(patterns, count),) int64, sorted, of the training images h_kk is estimated on
    before `epoch` (Appendix C: "500 patterns" before each pass): a draw without replacement from
    `numpy.random.default_rng([seed, CURVATURE_STREAM, epoch])`, the same in both engines and in a
    resumed run."""
    rng = np.random.default_rng([int(seed), CURVATURE_STREAM, int(epoch)])
    return np.sort(rng.choice(count, min(patterns, count), replace=False))
