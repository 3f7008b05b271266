"""The pure core of the daemon: no Kafka inside, fed records and time,
picklable and deterministic under ``config.estimator.seed``.

* :mod:`.examples` -- the labelled example (one joined inference + feedback);
* :mod:`.join` -- the :class:`~.join.Joiner` (by request_id, TTL, bounded);
* :mod:`.counterfactual` -- (loss, cost) of one example at every tau;
* :mod:`.bounds` -- Clopper-Pearson bounds on weighted counts;
* :mod:`.estimator` -- per-context recency-weighted L(tau), T(tau);
* :mod:`.risk_model` -- the River model of P(loss | checkpoint);
* :mod:`.guardrails` -- clamp, step, hysteresis, evidence, breaker, kill switch;
* :mod:`.allocation` -- the global-budget (Lagrangian, greedy) allocation;
* :mod:`.engine` -- :class:`~.engine.Controller`, :class:`~.engine.Core`,
  :class:`~.engine.Decision`, ``dump_state``/``load_state``.
"""
