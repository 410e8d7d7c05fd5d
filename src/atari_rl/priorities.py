"""Prioritized replay's sampling (Schaul et al. 2016): a sum tree and importance weights.

The replay memory draws a transition with probability p_i / sum(p), where p_i is its last
|TD error| (plus a small constant) raised to an exponent; new transitions get the largest
priority seen so far, so each is learned from at least about once. A sum tree keeps the
running sums, so that setting a priority and drawing one transition both take log2(N)
steps: for 1 M transitions, 20 levels, done for a whole batch at once with numpy.

Drawing by priority biases the updates towards the transitions drawn often;
`importance_weights` scales each sample's loss by (N * P(i)) ** -beta to undo that bias
(all of it at beta = 1), divided by the batch's largest weight so that the step size only
shrinks.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Non-negative values at leaves 0..size-1 and the sums of every subtree above them.

    Stored as one float64 array in heap order: node 1 is the root, node i's children are 2i
    and 2i + 1, and the leaves start at `self.leaves` (a power of two). Parents are always
    recomputed from their children, never adjusted by differences, so rounding errors do
    not accumulate over millions of updates.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("a sum tree needs at least one leaf")
        self.size = size
        self.leaves = _leaves(size)
        self._tree = np.zeros(2 * self.leaves, np.float64)

    @staticmethod
    def bytes_for(size: int) -> int:
        """What a tree of `size` leaves holds, without building one."""
        return 2 * _leaves(size) * np.dtype(np.float64).itemsize

    @property
    def total(self) -> float:
        return float(self._tree[1])

    def values(self) -> np.ndarray:
        """The leaves' values (a view)."""
        return self._tree[self.leaves:self.leaves + self.size]

    def get(self, index: np.ndarray) -> np.ndarray:
        return self._tree[np.asarray(index) + self.leaves]

    def set(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set the leaves at `index` (repeats take the last value) and the sums above them."""
        values = np.asarray(values, np.float64)
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("sum tree values must be finite and non-negative")
        node = np.asarray(index, np.int64).reshape(-1) + self.leaves
        if not len(node):
            return
        self._tree[node] = values
        tree = self._tree
        while node[0] > 1:  # every leaf is at the same depth, so all nodes rise together
            node = node >> 1
            tree[node] = tree[2 * node] + tree[2 * node + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """For each mass in [0, total), the leaf where the running sum of the values passes
        it: leaf i is returned for a uniform mass with probability value_i / total."""
        tree = self._tree
        mass = np.asarray(mass, np.float64).copy()
        node = np.ones(len(mass), np.int64)
        while node[0] < self.leaves:
            left = 2 * node
            right = mass >= tree[left]
            mass -= np.where(right, tree[left], 0.0)
            node = left + right
        return np.minimum(node - self.leaves, self.size - 1)

    def load(self, values: np.ndarray) -> None:
        """Replace all leaves and rebuild every sum (one pass per level)."""
        if values.shape != (self.size,):
            raise ValueError(f"sum tree: {values.shape} values for {self.size} leaves")
        self._tree[:] = 0.0
        self._tree[self.leaves:self.leaves + self.size] = values
        level = self.leaves
        while level > 1:
            parents = np.arange(level // 2, level)
            self._tree[parents] = self._tree[2 * parents] + self._tree[2 * parents + 1]
            level //= 2


def _leaves(size: int) -> int:
    """The leaf level's width: the power of two at or above size."""
    return 1 << (size - 1).bit_length()


def importance_weights(probabilities: np.ndarray, population: int, beta: float) -> np.ndarray:
    """(population * P(i)) ** -beta, divided by the batch's largest: float32 [B].

    beta = 0 gives ones (no correction); beta = 1 undoes the sampling bias fully. A sample
    drawn with probability 0 (possible only through rounding) gets the largest weight.
    """
    scaled = np.asarray(probabilities, np.float64) * population
    positive = scaled > 0
    floor = scaled[positive].min() if positive.any() else 1.0
    weights = np.maximum(scaled, floor) ** -beta
    return (weights / weights.max()).astype(np.float32)
