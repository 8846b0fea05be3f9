"""L-BFGS for a batch of independent problems: one row of `x` per job, one history per job.

Each step is what `torch.optim.LBFGS(lr=1, max_iter=1, tolerance_grad=0, tolerance_change=0,
line_search_fn=None)` does per step: the caller evaluates the gradient at the current point,
then `step` forms the search direction by the two-loop recursion over that job's own curvature
pairs and moves along it (the first step of a job is scaled to unit L1 gradient, as there). A
pair is kept only if its curvature yᵀs exceeds 1e-10, so jobs' histories can differ in length;
the recursion masks the missing pairs, and one job's pairs never touch another's direction.

Optional box bounds keep every coordinate inside [low, high]: each move is clipped to the box
(projected L-BFGS), and the curvature pair records the move actually taken, so the history
never learns from a step that the box cut short.

Differences from torch's optimiser: the two-loop runs over all jobs at once (batched dot
products and updates), the history is a fixed ring buffer instead of Python lists, and jobs can
leave the batch (`keep`). With one job and no bounds it follows torch.optim.LBFGS to float
rounding, except that a step refused for not descending is remembered as no move at all.
"""

from __future__ import annotations

import torch

CURVATURE_EPS = 1e-10


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two N×D tensors → N."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class BatchedLBFGS:
    """Per-job L-BFGS state for N problems of dimension D (all tensors fp32, on one device)."""

    def __init__(
        self,
        batch: int,
        dim: int,
        *,
        history: int = 20,
        lr: float = 1.0,
        device=None,
        h_diag: torch.Tensor | None = None,
    ) -> None:
        """`h_diag`, per job: a known scale of the inverse Hessian (e.g. from the same problem at
        a coarser resolution), so that the first step is −h·g at full length instead of a
        unit-L1 probe; 0 where none is known."""
        self.history = history
        self.lr = lr
        kw = {"dtype": torch.float32, "device": device}
        self.steps_: torch.Tensor = torch.zeros(batch, 2, history, dim, **kw)  # s, y pairs
        self.rho = torch.zeros(batch, history, **kw)
        known = torch.zeros(batch, **kw) if h_diag is None else h_diag.to(**kw)
        self.warm = known > 0
        self.h_diag = torch.where(self.warm, known, torch.ones_like(known))
        self.s: torch.Tensor | None = None  # each job's last move, as taken
        self.prev_grad: torch.Tensor | None = None
        # Python-side bookkeeping per job: ring head (next slot), pairs held, steps taken.
        self.head = [0] * batch
        self.count = [0] * batch
        self.taken = [0] * batch

    @property
    def batch(self) -> int:
        return len(self.head)

    def learned_scale(self) -> torch.Tensor:
        """Each job's inverse-Hessian scale as learned so far (0 where no pair was kept yet)."""
        learned = torch.tensor([c > 0 for c in self.count], device=self.h_diag.device)
        return torch.where(learned | self.warm, self.h_diag, torch.zeros_like(self.h_diag))

    def keep(self, rows: list[int]) -> None:
        """Drop every job not in `rows` (in that order), e.g. a cancelled one."""
        index = torch.tensor(rows, dtype=torch.long, device=self.rho.device)
        self.steps_ = self.steps_.index_select(0, index)
        self.rho = self.rho.index_select(0, index)
        self.h_diag = self.h_diag.index_select(0, index)
        self.warm = self.warm.index_select(0, index)
        if self.s is not None and self.prev_grad is not None:
            self.s = self.s.index_select(0, index)
            self.prev_grad = self.prev_grad.index_select(0, index)
        self.head = [self.head[r] for r in rows]
        self.count = [self.count[r] for r in rows]
        self.taken = [self.taken[r] for r in rows]

    def _pair(self, k: int, which: int) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """The k-th newest s (which=0) or y (1) of every job, its rho, and which jobs have one."""
        m = self.history
        slots = [(h - 1 - k) % m for h in self.head]
        valid = [k < c for c in self.count]
        if all(s == slots[0] for s in slots):
            return self.steps_[:, which, slots[0]], self.rho[:, slots[0]], valid
        rows = torch.arange(self.batch, device=self.rho.device)
        index = torch.tensor(slots, device=self.rho.device)
        return self.steps_[rows, which, index], self.rho[rows, index], valid

    def _mask(self, values: torch.Tensor, valid: list[bool]) -> torch.Tensor:
        if all(valid):
            return values
        return values * torch.tensor(valid, dtype=values.dtype, device=values.device)

    def _remember(self, grad: torch.Tensor, live: list[bool]) -> None:
        """Store each job's newest curvature pair (s from the last move, y from the gradients)."""
        assert self.s is not None and self.prev_grad is not None
        y = grad - self.prev_grad
        s = self.s
        ys = _dot(y, s)
        yy = _dot(y, y)
        accepted = (ys > CURVATURE_EPS).tolist()
        for n, ok in enumerate(accepted):
            if not (ok and live[n] and self.taken[n] > 0):
                continue
            slot = self.head[n]
            self.steps_[n, 0, slot] = s[n]
            self.steps_[n, 1, slot] = y[n]
            self.rho[n, slot] = 1.0 / ys[n]
            self.h_diag[n] = ys[n] / yy[n]
            self.head[n] = (slot + 1) % self.history
            self.count[n] = min(self.count[n] + 1, self.history)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The two-loop recursion, per job, over its own pairs."""
        q = grad.neg()
        alphas: list[torch.Tensor] = []
        depth = max(self.count)
        for k in range(depth):  # newest first
            s, rho, valid = self._pair(k, 0)
            y, _, _ = self._pair(k, 1)
            alpha = self._mask(_dot(s, q) * rho, valid)
            q.addcmul_(y, alpha.unsqueeze(1), value=-1.0)
            alphas.append(alpha)
        r = q.mul_(self.h_diag.unsqueeze(1))
        for k in reversed(range(depth)):  # oldest first
            s, rho, valid = self._pair(k, 0)
            y, _, _ = self._pair(k, 1)
            beta = self._mask(_dot(y, r) * rho, valid)
            r.addcmul_(s, (alphas[k] - beta).unsqueeze(1))
        return r

    @torch.no_grad()
    def step(
        self,
        x: torch.Tensor,
        grad: torch.Tensor,
        low: torch.Tensor | None = None,
        high: torch.Tensor | None = None,
    ) -> None:
        """Move each row of `x` (N×D, updated in place) given the gradient at `x`.

        With `low` and `high` (broadcastable to `x`), the moved point is clipped into that box.
        """
        grad = grad.detach().float()
        # A zero gradient is a minimum: torch's optimiser returns without touching its state.
        live = (grad.abs().amax(1) > 0).tolist()
        if self.s is None or self.prev_grad is None:
            self.s = torch.zeros_like(grad)
            self.prev_grad = torch.zeros_like(grad)
        else:
            self._remember(grad, live)
        direction = self._direction(grad)  # a job's first step: no pairs: −h_diag·grad
        first = torch.tensor([n == 0 for n in self.taken], device=grad.device) & ~self.warm
        # a cold first step is scaled to unit L1 gradient, later ones take the full step
        first_t = torch.clamp(1.0 / grad.abs().sum(1), max=1.0) * self.lr
        t = torch.where(first, first_t, torch.full_like(first_t, self.lr))
        # Not a descent direction: torch's optimiser keeps the point (and still its state).
        descent = (_dot(grad, direction) <= 0).tolist()
        move = torch.tensor(
            [lv and dc for lv, dc in zip(live, descent, strict=True)],
            dtype=x.dtype, device=x.device,
        )  # fmt: skip
        before = x.clone()
        x.addcmul_(direction, (t * move).unsqueeze(1))
        if low is not None or high is not None:
            x.clamp_(low, high)
        moved = x - before
        if all(live):
            self.s, self.prev_grad = moved, grad
        else:
            rows = torch.tensor(live, device=grad.device).unsqueeze(1)
            self.s = torch.where(rows, moved, self.s)
            self.prev_grad = torch.where(rows, grad, self.prev_grad)
        self.taken = [n + 1 if lv else n for n, lv in zip(self.taken, live, strict=True)]
