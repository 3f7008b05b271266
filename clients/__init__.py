"""What apps and inferencers embed, and the reference inferencer.

- :mod:`.publisher` - ``EventPublisher``: non-blocking inference/feedback events.
- :mod:`.table` - ``ThresholdTable``: lock-free thresholds tailed from Kafka; ``decide``.
- :mod:`.anytime` - the shipped ONNX multi-exit digits model; ``digits_traces`` for the simulator.
- :mod:`.inferencer` / :mod:`.feedback` - the reference fleet and its feedback source.
- :mod:`.cli` - ``stopwise tail | publish | inferencer``.
"""
