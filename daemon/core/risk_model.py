"""The River model of EM risk: P(loss at checkpoint k | features).

Learned online from the labelled checkpoints of complete runs whose full
answer's EM is known (the label of checkpoint ``k`` is the loss of stopping
there: full answer correct and ``answer_k`` differs from it). Features of a
checkpoint (:func:`checkpoint_features`): its score (and score squared, and
one-hot score bins of width 0.05 above 0.5, so the logistic can follow the
step where answers settle), relative position (tokens / budget), answer
stability (length of the run of equal answers ending at ``k``, over
``k + 1``, and one-hot run length), answer changes so far, the context
dimensions one-hot (``ctx:dim=value``) with score and score-bin
interactions (``score*ctx:dim=value``, ``sbin=b*ctx:dim=value``), and the request's numeric features (``f:name``).
Model: ``LogisticRegression(SGD(learning_rate))`` with no scaler (River's
StandardScaler maps an always-1 one-hot feature to 0, erasing it; the
numeric inputs are already in [0, 1]), followed by an online histogram
calibrator: bins of width 0.5 on the raw log-odds (from -8 to 4, so the
resolution is kept near 0 where budgets live), each reporting
``(sum y + 10 p_bin) / (n + 10)``, updated prequentially (predict, then
learn), which makes the output calibrated on the stream it learns from.

Cheap by construction: at most ``per_example`` checkpoints (drawn with a
seeded RNG) are learned per example; once a context has contributed
``warmup`` examples, only a seeded random ``sample_rate`` share of its later
examples is learned (the model is a prior for data-poor contexts, so a new
context is always learned in full while it is data-poor); inverse-propensity
weights are capped at ``max_weight`` to keep SGD stable.

The model's prediction of a context's L(tau) (the shrinkage prior of the
estimator) is the mean, over that context's recent complete runs, of the
predicted loss at the checkpoint where tau would stop (:meth:`RiskModel.prior`).

>>> m = RiskModel(seed=1, learning_rate=0.05)
>>> 0.0 < m.predict({"score": 0.9}) < 1.0
True
"""

from __future__ import annotations

import math
import random
from operator import itemgetter, ne
from typing import Sequence

from river import linear_model, optim, utils

from .counterfactual import Counterfactual, stop_indices
from .examples import LabelledExample

_ANSWER = itemgetter(2)
MAX_TRACKED_CONTEXTS = 4096
"""Per-context warm-up counters kept by :class:`RiskModel` (cleared beyond)."""


def checkpoint_features(ex: LabelledExample, k: int) -> dict[str, float]:
    """Features of checkpoint ``k`` of ``ex`` (see module doc)."""
    cps = ex.checkpoints
    tokens, score, answer = cps[k]
    budget = ex.tokens_budget or cps[-1][0] or 1
    run = 1
    j = k - 1
    while j >= 0 and cps[j][2] == answer:
        run += 1
        j -= 1
    answers = list(map(_ANSWER, cps[:k + 1]))
    changes = sum(map(ne, answers[1:], answers))   # answer changes up to k
    sbin = min(9, int(score * 20) - 10) if score >= 0.5 else -1
    x = {
        "score": score,
        "score2": score * score,
        "pos": min(1.0, tokens / budget),
        "stable": run / (k + 1),
        "changes": changes / (k + 1),
        f"sbin={sbin}": 1.0,
        f"run={min(run, 4)}": 1.0,
    }
    for dim, value in ex.context.items():
        x[f"ctx:{dim}={value}"] = 1.0
        x[f"score*ctx:{dim}={value}"] = score
        x[f"sbin={sbin}*ctx:{dim}={value}"] = 1.0
    for name, value in ex.features.items():
        x[f"f:{name}"] = float(value)
    return x


class RiskModel:
    """Online logistic model of per-checkpoint loss (see module doc)."""

    def __init__(self, seed: int = 42, learning_rate: float = 0.05, enabled: bool = True,
                 per_example: int = 2, max_weight: float = 10.0, warmup: int = 1000,
                 sample_rate: float = 0.2) -> None:
        self.seed = seed
        self.learning_rate = learning_rate
        self.enabled = enabled
        self.per_example = per_example
        self.max_weight = max_weight
        self.warmup = warmup
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self.pipeline = self._new_pipeline()
        self.calibrator = HistogramCalibrator()
        self.n_learned = 0
        self._seen: dict[str, int] = {}

    # ---- state: plain data only (the River objects are rebuilt, never stored)
    def __getstate__(self) -> dict:
        """Plain state for :mod:`.statecodec`: settings, counters, the RNG,
        the calibrator, and the logistic model as weights + intercept + the
        optimizer's step count (the River objects are rebuilt from these)."""
        state = {k: v for k, v in self.__dict__.items() if k != "pipeline"}
        lr = self.pipeline
        state["logistic"] = {"weights": dict(lr._weights.to_dict()), "intercept": float(lr.intercept),
                             "n_iterations": int(lr.optimizer.n_iterations)}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        logistic = state.pop("logistic")
        self.__dict__.update(state)
        self.pipeline = self._new_pipeline()
        self.pipeline._weights = utils.VectorDict({str(k): float(v) for k, v in logistic["weights"].items()})
        self.pipeline.intercept = float(logistic["intercept"])
        self.pipeline.optimizer.n_iterations = int(logistic["n_iterations"])

    def _new_pipeline(self):
        return linear_model.LogisticRegression(optimizer=optim.SGD(self.learning_rate),
                                               intercept_lr=self.learning_rate)

    def learn(self, ex: LabelledExample, cf: Counterfactual, key: str | None = None) -> int:
        """Learn from a complete, labelled example; return checkpoints learned.

        The first ``warmup`` such examples of each context (``key``, by
        default the example's context key) are all learned; later ones with
        probability ``sample_rate`` (a seeded draw), since the model only
        matters as a prior for data-poor contexts."""
        if not self.enabled or not cf.complete or cf.em_full is None:
            return 0
        seen = self._seen
        if key is None:
            key = ex.context_key
        count = seen.get(key, 0)
        if count >= self.warmup:
            if self._rng.random() >= self.sample_rate:
                return 0
        else:
            if count == 0 and len(seen) >= MAX_TRACKED_CONTEXTS:
                seen.clear()
            seen[key] = count + 1
        cps = ex.checkpoints
        n = len(cps)
        idx = range(n) if n <= self.per_example else self._rng.sample(range(n), self.per_example)
        a_full = cps[-1][2]
        w = min(self.max_weight, cf.weight if cf.weight > 0 else ex.weight)
        for k in idx:
            y = cf.em_full == 1 and cps[k][2] != a_full
            x = checkpoint_features(ex, k)
            self.calibrator.update(self.raw(x), y, w)
            self.pipeline.learn_one(x, y, w=w)
            self.n_learned += 1
        return len(idx)

    def raw(self, x: dict[str, float]) -> float:
        """The logistic model's uncalibrated probability."""
        return float(self.pipeline.predict_proba_one(x).get(True, 0.0))

    def predict(self, x: dict[str, float]) -> float:
        """Calibrated P(loss) for one checkpoint's features."""
        return self.calibrator.calibrate(self.raw(x))

    def predict_checkpoint(self, ex: LabelledExample, k: int) -> float:
        return self.predict(checkpoint_features(ex, k))

    def prior(self, examples: Sequence[LabelledExample], taus: Sequence[float],
              memo: dict | None = None) -> tuple[float, ...] | None:
        """Mean predicted loss at each tau's stop point over complete runs
        (``None`` if the model is off, untrained or there are none).
        ``memo`` (optional, only while the model does not learn) shares the
        per-checkpoint predictions between calls: the controller passes one
        per tick, as a context and its ancestors hold the same recent runs."""
        runs = [ex for ex in examples if ex.complete]
        if not self.enabled or self.n_learned == 0 or not runs:
            return None
        if memo is None:
            memo = {}
        sums = [0.0] * len(taus)
        for ex in runs:
            cps = ex.checkpoints
            last = len(cps) - 1
            for i, k in enumerate(stop_indices(cps, taus)):
                if taus[i] >= 1.0 or k == last:
                    continue  # stopping at the end loses nothing
                mk = (id(ex), k)
                p = memo.get(mk)
                if p is None:
                    p = memo[mk] = self.predict_checkpoint(ex, k)
                sums[i] += p
        return tuple(s / len(runs) for s in sums)


class HistogramCalibrator:
    """Online histogram-binning calibration of a probability.

    >>> c = HistogramCalibrator(strength=0.0)
    >>> for y in (1, 0, 0, 0): c.update(0.9, y)
    >>> c.calibrate(0.91), c.calibrate(0.1)
    (0.25, 0.1)
    """

    LO, HI, WIDTH = -8.0, 4.0, 0.5

    def __init__(self, strength: float = 10.0, max_count: float = 20000.0) -> None:
        bins = int((self.HI - self.LO) / self.WIDTH) + 2
        self.bins = bins
        self.strength = strength
        self.max_count = max_count
        self.n = [0.0] * bins
        self.y = [0.0] * bins
        self.p = [0.0] * bins

    def _bin(self, p: float) -> int:
        p = min(max(p, 1e-12), 1 - 1e-12)
        z = math.log(p / (1.0 - p))
        return min(self.bins - 1, max(0, int((z - self.LO) // self.WIDTH) + 1))

    def update(self, p: float, y: bool | int, w: float = 1.0) -> None:
        b = self._bin(p)
        if self.n[b] >= self.max_count:  # keep it recent: halve old counts
            self.n[b] *= 0.5
            self.y[b] *= 0.5
            self.p[b] *= 0.5
        self.n[b] += w
        self.y[b] += w * float(y)
        self.p[b] += w * p

    def calibrate(self, p: float) -> float:
        b = self._bin(p)
        n = self.n[b]
        if n <= 0:
            return p
        p_bin = self.p[b] / n
        return (self.y[b] + self.strength * p_bin) / (n + self.strength)
