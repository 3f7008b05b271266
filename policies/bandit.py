"""A contextual bandit over the tau grid (River's bandit module): one
bandit per context, arms = taus (1.0 included), reward = tokens saved minus
``penalty`` times the loss.

Every informative labelled example gives the reward of EVERY arm exactly
(its counterfactual, :mod:`stopwise.daemon.core.counterfactual`), so all
arms are updated with the example's Horvitz-Thompson weight (full
information, off-policy); the bandit (``river.bandit.UCB`` by default, or
``EpsilonGreedy``) then picks the arm. Seeded, so deterministic.

>>> from stopwise.daemon.core.counterfactual import Counterfactual
>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View, Outcome
>>> cf = Counterfactual((0.5, 0.9, 1.0), (1, 0, 0), (0.3, 0.6, 1.0), (0, 1, 1), 1.0, 0, 1, True)
>>> p = BanditPolicy(seed=1)
>>> for _ in range(200): p.learn_one("*", Outcome(None, cf))
>>> st = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (1, 1, 0), (1, 1, 1), 0, 0, 0)
>>> p.decide("*", View("*", st, 0.01), 0.0).threshold
0.9
"""

from __future__ import annotations

from river import bandit

from .base import Outcome, Policy, Proposal, View, estimates


class BanditPolicy(Policy):
    name = "bandit"

    def __init__(self, algorithm: str = "ucb", penalty: float = 50.0, delta: float = 0.1, epsilon: float = 0.05,
                 seed: int = 42, explore_rate: float | None = None) -> None:
        if algorithm not in ("ucb", "epsilon_greedy"):
            raise ValueError(f"algorithm {algorithm!r}: valid are 'ucb', 'epsilon_greedy'")
        self.algorithm = algorithm
        self.penalty = penalty
        self.delta = delta
        self.epsilon = epsilon
        self.seed = seed
        self.explore_rate = explore_rate
        self._bandits: dict[str, object] = {}

    def _bandit(self, key: str):
        b = self._bandits.get(key)
        if b is None:
            seed = self.seed + sum(key.encode()) % 10007
            b = bandit.UCB(delta=self.delta, seed=seed) if self.algorithm == "ucb" else \
                bandit.EpsilonGreedy(epsilon=self.epsilon, seed=seed)
            self._bandits[key] = b
        return b

    # ---- state: plain data (the River bandits are rebuilt, never stored)
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_bandits"}
        state["bandits"] = {key: {"n": b._n, "counts": dict(b._counts), "rng": b._rng,
                                  "rewards": {arm: (m.n, m._mean) for arm, m in b._rewards.items()}}
                            for key, b in self._bandits.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        saved = state.pop("bandits")
        self.__dict__.update(state)
        self._bandits = {}
        for key, st in saved.items():
            b = self._bandit(key)
            b._n = int(st["n"])
            b._counts.update({int(arm): c for arm, c in st["counts"].items()})
            b._rng = st["rng"]
            for arm, (n, mean) in st["rewards"].items():
                m = b._rewards[int(arm)]
                m.n, m._mean = float(n), float(mean)

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        cf = outcome.counterfactual
        if cf.weight <= 0 or outcome.followup:
            return
        b = self._bandit(context_key)
        for i, (lo, co) in enumerate(zip(cf.loss, cf.cost)):
            b.update(i, (1.0 - co) - self.penalty * lo, w=cf.weight)

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        b = self._bandits.get(context_key)
        i = len(view.taus) - 1 if b is None or not b._n else b.pull(list(range(len(view.taus))))
        tau = view.taus[i]
        rate = view.initial_rate if self.explore_rate is None else self.explore_rate
        return Proposal(tau, rate, f"bandit: arm {tau:g}", **estimates(view, i))
