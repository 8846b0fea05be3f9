"""L-BFGS for a batch of independent problems: one row of `x` per job, one history per job.

`BatchedLBFGS(batch, dim).step(x, grad, low, high)` is called once per gradient evaluation: the
caller evaluates the gradient at `x`, and `step` moves `x` (in place) to the next point to
evaluate. Each job keeps its own curvature pairs (a ring buffer of `history` pairs); a pair is
used only where its curvature yᵀs exceeds 1e-10, so jobs' histories can differ in length, and
one job's pairs never touch another's direction. Jobs can leave the batch (`keep`).

Without bounds, each step is exactly what `torch.optim.LBFGS(lr=1, max_iter=1,
tolerance_grad=0, tolerance_change=0, line_search_fn=None)` does per step (to float rounding):
the two-loop direction, a cold first step scaled to unit L1 gradient, full steps after, and no
safeguard; a step that is not a descent direction is remembered as no move at all.

With bounds `low`/`high` (broadcastable to `x`), it is a projected quasi-Newton method on the
free variables, with an Armijo backtracking search spread over calls:

- The binding set is the coordinates at a bound whose gradient pushes outward; they stay put.
  The direction is the L-BFGS direction of the problem restricted to the other (free)
  coordinates: the gradient and every stored curvature pair are restricted to them, and a pair
  whose restricted curvature yᵀs is not above 1e-10 sits this step out. The inverse-Hessian
  scale (the `h_diag` that `learned_scale` hands to a warm start) is the newest such pair's
  yᵀs/yᵀy, measured on the free coordinates too.
- The trial point is the move projected onto the box. Where the projection would make it
  ascend to first order, the step is the projected gradient instead (−h_diag·g on the free
  coordinates), which always descends.
- The next call tests the trial against its base (the last accepted point): accepted if
  f(trial) − f(base) ≤ 1e-4·g_baseᵀ(trial − base). The change of f is taken from the two
  gradients, ½(g_base + g_trial)ᵀ(trial − base): exact for a quadratic, and for a smooth f off
  by a third-order term in the step. A refused trial sends the job back to its base with a
  shorter step along the same path (quadratic interpolation, 0.1–0.5 of the last) for one more
  evaluation; its curvature pair is kept, being valid information.

Guarantees with bounds: every point handed back lies in the box (a start outside it is first
projected into it); every accepted point passes the test against the previous one, so on a
quadratic the accepted points' values never increase; a job whose projected gradient is zero
stays where it is. A refused trial is one step from an accepted point, and its value is bounded
by nothing else.
"""

from __future__ import annotations

import torch

CURVATURE_EPS = 1e-10
ARMIJO = 1e-4  # sufficient decrease: this fraction of the first-order prediction
BACKTRACK = (0.1, 0.5)  # a refused trial's step shrinks to between these fractions of the last


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two N×D tensors → N."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _masked(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return values if mask is None else values * mask


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
        self.learned = torch.zeros(batch, dtype=torch.bool, device=device)
        # Without bounds: each job's last move as taken, and the gradient before it.
        self.s: torch.Tensor | None = None
        self.prev_grad: torch.Tensor | None = None
        # With bounds: each job's base (last accepted point, its gradient and loss), the
        # direction and step length of its pending trial, and whether one is pending.
        self.base: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.trial: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pending = torch.zeros(batch, dtype=torch.bool, device=device)
        # Python-side bookkeeping per job: ring head (next slot), pairs held, steps taken.
        self.head = [0] * batch
        self.count = [0] * batch
        self.taken = [0] * batch

    @property
    def batch(self) -> int:
        return len(self.head)

    def learned_scale(self) -> torch.Tensor:
        """Each job's inverse-Hessian scale as learned so far (0 where none was learned yet)."""
        known = self.learned | self.warm
        return torch.where(known, self.h_diag, torch.zeros_like(self.h_diag))

    def keep(self, rows: list[int]) -> None:
        """Drop every job not in `rows` (in that order), e.g. a cancelled one."""
        index = torch.tensor(rows, dtype=torch.long, device=self.rho.device)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, index)

        self.steps_, self.rho = pick(self.steps_), pick(self.rho)
        self.h_diag, self.warm, self.learned = (
            pick(self.h_diag),
            pick(self.warm),
            pick(self.learned),
        )
        self.pending = pick(self.pending)
        if self.s is not None and self.prev_grad is not None:
            self.s, self.prev_grad = pick(self.s), pick(self.prev_grad)
        if self.base is not None and self.trial is not None:
            self.base = (pick(self.base[0]), pick(self.base[1]))
            self.trial = (pick(self.trial[0]), pick(self.trial[1]))
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

    def _remember(self, s: torch.Tensor, y: torch.Tensor, rows: list[bool]) -> None:
        """Store the curvature pair (s, y) of each job in `rows` whose yᵀs is large enough."""
        ys = _dot(y, s)
        accepted = (ys > CURVATURE_EPS).tolist()
        for n, ok in enumerate(accepted):
            if not (ok and rows[n]):
                continue
            slot = self.head[n]
            self.steps_[n, 0, slot] = s[n]
            self.steps_[n, 1, slot] = y[n]
            self.rho[n, slot] = 1.0 / ys[n]
            self.head[n] = (slot + 1) % self.history
            self.count[n] = min(self.count[n] + 1, self.history)

    def _direction(self, grad: torch.Tensor, free: torch.Tensor | None) -> torch.Tensor:
        """The two-loop recursion, per job, over its own pairs restricted to `free` (N×D of 0/1;
        None: all coordinates). Sets each job's h_diag from its newest usable pair."""
        q = _masked(grad.neg(), free)
        used: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # alpha, rho, ok
        found = torch.zeros_like(self.learned)
        scale = self.h_diag.clone()
        for k in range(max(self.count)):  # newest first
            s, rho, valid = self._pair(k, 0)
            y = _masked(self._pair(k, 1)[0], free)
            ys = _dot(s, y)
            ok = torch.tensor(valid, device=grad.device) & (ys > CURVATURE_EPS)
            if free is not None:
                rho = 1.0 / ys
            scale = torch.where(ok & ~found, ys / _dot(y, y), scale)
            found |= ok
            alpha = torch.where(ok, _dot(s, q) * rho, torch.zeros_like(ys))
            q.addcmul_(y, alpha.unsqueeze(1), value=-1.0)
            used.append((alpha, rho, ok))
        self.h_diag = scale
        self.learned |= found
        r = q.mul_(scale.unsqueeze(1))
        for k in reversed(range(len(used))):  # oldest first
            alpha, rho, ok = used[k]
            y = _masked(self._pair(k, 1)[0], free)
            beta = torch.where(ok, _dot(y, r) * rho, torch.zeros_like(alpha))
            r.addcmul_(_masked(self._pair(k, 0)[0], free), (alpha - beta).unsqueeze(1))
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

        With `low` and/or `high` (broadcastable to `x`), the projected method of the module
        docstring keeps `x` in that box.
        """
        grad = grad.detach().float()
        if low is None and high is None:
            self._unbounded_step(x, grad)
            return
        bounds = [
            torch.broadcast_to(torch.as_tensor(b, device=x.device).float(), x.shape)
            for b in (-float("inf") if low is None else low, float("inf") if high is None else high)
        ]
        x.copy_(self._boxed_step(x.detach().float(), grad, bounds[0], bounds[1]))
        x.clamp_(*(bound.to(x.dtype) for bound in bounds))  # in x's own precision too

    def _first_length(self, grad: torch.Tensor) -> torch.Tensor:
        """Per job: a cold first step is scaled to unit L1 gradient, later ones take lr."""
        first = torch.tensor([n == 0 for n in self.taken], device=grad.device) & ~self.warm
        first_t = torch.clamp(1.0 / grad.abs().sum(1), max=1.0) * self.lr
        return torch.where(first, first_t, torch.full_like(first_t, self.lr))

    def _unbounded_step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        """torch.optim.LBFGS's step without a line search, per job."""
        # A zero gradient is a minimum: torch's optimiser returns without touching its state.
        live = (grad.abs().amax(1) > 0).tolist()
        if self.s is None or self.prev_grad is None:
            self.s = torch.zeros_like(grad)
            self.prev_grad = torch.zeros_like(grad)
        else:
            started = [lv and n > 0 for lv, n in zip(live, self.taken, strict=True)]
            self._remember(self.s, grad - self.prev_grad, started)
        direction = self._direction(grad, None)  # a job's first step: no pairs: −h_diag·grad
        t = self._first_length(grad)
        # Not a descent direction: torch's optimiser keeps the point (and still its state).
        descent = (_dot(grad, direction) <= 0).tolist()
        move = torch.tensor(
            [lv and dc for lv, dc in zip(live, descent, strict=True)],
            dtype=x.dtype, device=x.device,
        )  # fmt: skip
        moved = direction * (t * move).unsqueeze(1)
        x.add_(moved)
        if all(live):
            self.s, self.prev_grad = moved, grad
        else:
            rows = torch.tensor(live, device=grad.device).unsqueeze(1)
            self.s = torch.where(rows, moved, self.s)
            self.prev_grad = torch.where(rows, grad, self.prev_grad)
        self.taken = [n + 1 if lv else n for n, lv in zip(self.taken, live, strict=True)]

    def _boxed_step(
        self, x: torch.Tensor, grad: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """Test each job's pending trial at `x`; return every job's next point (module
        docstring)."""
        x = x.clamp(low, high)
        if self.base is None or self.trial is None:  # the first call: x is every job's base
            accept = torch.ones_like(self.pending)
            base, trial = (x.clone(), grad), (torch.zeros_like(grad), torch.ones_like(grad[:, 0]))
        else:
            base, trial = self.base, self.trial
            s, y = x - base[0], grad - base[1]
            slope = _dot(base[1], s)  # the first-order change, < 0 for a pending trial
            change = 0.5 * _dot(base[1] + grad, s)
            accept = ~self.pending | (change <= ARMIJO * slope)
            self._remember(s, y, self.pending.tolist())  # a refused trial's pair is valid too
            shrink = (-slope / (2.0 * (change - slope))).nan_to_num(BACKTRACK[1])
            trial = (trial[0], torch.where(accept, trial[1], trial[1] * shrink.clamp(*BACKTRACK)))
        rows = accept.unsqueeze(1)
        point = torch.where(rows, x, base[0])
        at = torch.where(rows, grad, base[1])
        # The binding set: at a bound, with the gradient pushing outward. The rest is free.
        free = ~((point <= low) & (at > 0) | (point >= high) & (at < 0))
        reduced = at * free
        live = reduced.abs().amax(1) > 0
        direction = self._direction(at, free.to(at.dtype))
        length = self._first_length(reduced)
        moved = (point + direction * length.unsqueeze(1)).clamp(low, high) - point
        ascends = (_dot(at, moved) >= 0).unsqueeze(1)  # the projection undid the descent
        direction = torch.where(ascends, -self.h_diag.unsqueeze(1) * reduced, direction)
        direction = torch.where(rows, direction, trial[0])
        length = torch.where(accept, length, trial[1])
        self.base, self.trial = (point, at), (direction, length)
        self.pending = live | ~accept
        accepted = (accept & live).tolist()
        self.taken = [n + int(a) for n, a in zip(self.taken, accepted, strict=True)]
        step = torch.where(self.pending.unsqueeze(1), direction * length.unsqueeze(1), 0.0)
        return (point + step).clamp(low, high)
