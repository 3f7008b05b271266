"""The reference anytime model: load the shipped per-block ONNX files and run
them with the stopping rule; generate digits requests and world-file traces.

Checkpoints are the exits: ``[tokens, score, answer_hash]`` with tokens = the
cumulative multiply-accumulates spent so far, score = the exit's top softmax
probability, answer_hash = the predicted class as a string. Stopping early
skips the later blocks (one ONNX model per block). onnxruntime only; the data
is scikit-learn's bundled digits (no download).

Contexts whose risk curves differ: ``domain=clean`` vs ``domain=noisy``
(Gaussian noise added to the pixels) and ``task=digits`` (all classes) vs
``task=hard`` (only confusable classes).

>>> m = AnytimeModel.load()
>>> m.n_exits, m.cumulative_tokens == sorted(m.cumulative_tokens)
(4, True)
>>> req = make_request(7, 0)
>>> res = m.run(req.x, threshold=1.0)
>>> res.stop_index == m.n_exits - 1, len(res.checkpoints)
(True, 4)
>>> early = m.run(req.x, threshold=0.5)
>>> early.tokens <= res.tokens
True
>>> t = next(digits_traces(seed=1, n=1))
>>> sorted(t)
['checkpoints', 'context', 'features', 'feedback', 'gold_answer_hash', 'request_id', 'ts']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from stopwise.daemon.stoprule import NO_EARLY_STOP, stops_at

MODEL_DIR = Path(__file__).resolve().parent / "models"
METADATA_FILE = "anytime_digits.json"
SPLIT_SEED = 12345
TEST_FRACTION = 1.0 / 3.0
NOISE_SIGMA = 0.45
HARD_CLASSES = (1, 3, 5, 7, 8, 9)
TASKS = ("digits", "hard")
DOMAINS = ("clean", "noisy")

Checkpoint = tuple[int, float, str]


@lru_cache(maxsize=1)
def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], split deterministically: x_train, y_train, x_test, y_test, test_idx."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(len(x) * TEST_FRACTION))
    te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
    out = (x[tr], y[tr], x[te], y[te], te)
    for a in out:  # cached and shared by every caller: read-only
        a.setflags(write=False)
    return out


def add_noise(x: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """The ``domain=noisy`` corruption: additive Gaussian pixel noise."""
    return (x + rng.normal(0.0, sigma, size=x.shape)).astype(np.float32)


@dataclass(frozen=True, slots=True)
class RunResult:
    """One request's run: the checkpoints computed, the delivered index and answer."""

    checkpoints: list[Checkpoint]
    stop_index: int
    complete: bool

    @property
    def answer(self) -> str:
        return self.checkpoints[self.stop_index][2]

    @property
    def tokens(self) -> int:
        return self.checkpoints[-1][0]


class AnytimeModel:
    """The shipped multi-exit network, one onnxruntime session per block."""

    def __init__(self, sessions: list, metadata: dict) -> None:
        self.sessions = sessions
        self.metadata = metadata
        self.cumulative_tokens: list[int] = [int(t) for t in metadata["cumulative_macs"]]
        self.n_exits = len(sessions)

    @classmethod
    def load(cls, model_dir: str | Path | None = None, threads: int = 1) -> "AnytimeModel":
        """Load ``block*.onnx`` + metadata with onnxruntime (single-threaded sessions by default)."""
        import onnxruntime as ort

        d = Path(model_dir) if model_dir else MODEL_DIR
        meta = json.loads((d / METADATA_FILE).read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sessions = [ort.InferenceSession(str(d / name), opts, providers=["CPUExecutionProvider"])
                    for name in meta["blocks"]]
        return cls(sessions, meta)

    def block(self, i: int, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run block ``i``: (next hidden state, exit probabilities)."""
        h_out, probs = self.sessions[i].run(None, {"h_in": h})
        return h_out, probs

    def run(self, x: np.ndarray, threshold: float = NO_EARLY_STOP, explore: bool = False) -> RunResult:
        """Run one input with the stopping rule (``stoprule.stops_at``); an
        exploring request runs every block and delivers the full answer."""
        h = np.asarray(x, dtype=np.float32).reshape(1, -1)
        cps: list[Checkpoint] = []
        tokens = self.cumulative_tokens
        for i, sess in enumerate(self.sessions):
            h, probs = sess.run(None, {"h_in": h})
            row = probs[0].tolist()          # 10 floats: cheaper in pure Python than numpy scalars
            score = max(row)
            k = row.index(score)
            score = score if score < 1.0 else 1.0
            cps.append((tokens[i], score, str(k)))
            if not explore and stops_at(score, threshold):
                break
        complete = len(cps) == self.n_exits
        return RunResult(cps, len(cps) - 1, complete)

    def run_plain(self, x: np.ndarray) -> str:
        """Every block, no stopping logic (the benchmark's baseline); the final answer."""
        h = np.asarray(x, dtype=np.float32).reshape(1, -1)
        probs = None
        for s in self.sessions:
            h, probs = s.run(None, {"h_in": h})
        return str(int(probs[0].argmax()))

    def full_batch(self, x: np.ndarray) -> list[list[Checkpoint]]:
        """Full runs of a batch: per row, every checkpoint."""
        h = np.asarray(x, dtype=np.float32)
        scores, answers = [], []
        for i in range(self.n_exits):
            h, probs = self.block(i, h)
            answers.append(probs.argmax(1))
            scores.append(np.minimum(probs.max(1), 1.0))
        return [[(self.cumulative_tokens[i], float(scores[i][r]), str(int(answers[i][r])))
                 for i in range(self.n_exits)] for r in range(len(h))]


@dataclass(frozen=True, slots=True)
class DigitsRequest:
    request_id: str
    context: dict[str, str]
    features: dict[str, float]
    x: np.ndarray
    label: int


@lru_cache(maxsize=4)
def _pools() -> dict[str, np.ndarray]:
    _, _, _, y_te, _ = load_data()
    hard = np.isin(y_te, HARD_CLASSES)
    return {"digits": np.arange(len(y_te)), "hard": np.flatnonzero(hard)}


def make_request(seed: int, i: int, *, prefix: str = "digits",
                 tasks: Sequence[str] = TASKS, domains: Sequence[str] = DOMAINS) -> DigitsRequest:
    """The ``i``-th request of stream ``seed``: a context drawn uniformly over
    ``tasks`` x ``domains``, a test image from the task's pool (noised for
    ``domain=noisy``), deterministic in (seed, i)."""
    _, _, x_te, y_te, _ = load_data()
    rng = np.random.default_rng([seed, i])
    task = tasks[int(rng.integers(len(tasks)))]
    domain = domains[int(rng.integers(len(domains)))]
    pool = _pools()[task]
    j = int(pool[int(rng.integers(len(pool)))])
    x = x_te[j]
    sigma = NOISE_SIGMA if domain == "noisy" else 0.0
    if sigma:
        x = add_noise(x, rng, sigma)
    features = {"noise": sigma, "ink": round(float(np.clip(x, 0, 1).mean()), 4)}
    return DigitsRequest(f"{prefix}-{seed}-{i}", {"task": task, "domain": domain}, features, x, int(y_te[j]))


def digits_traces(seed: int, n: int, start_ts: float = 0.0, rate: float = 100.0, *,
                  feedback_missing: float = 0.1, feedback_delay: float = 5.0,
                  model: AnytimeModel | None = None, batch: int = 256) -> Iterator[dict]:
    """World-file requests from the real ONNX model on digits (for the simulator).

    Each yields ``{"request_id", "ts", "context", "features", "checkpoints"
    (the FULL run), "gold_answer_hash", "feedback": {"present", "delay_s"}}``.
    Arrivals are Poisson at ``rate`` per second from ``start_ts``; feedback is
    missing with probability ``feedback_missing`` and otherwise arrives after an
    exponential delay of mean ``feedback_delay`` seconds. Deterministic in ``seed``.
    """
    m = model or AnytimeModel.load()
    rng = np.random.default_rng([seed, 0xD161])
    ts = start_ts
    for base in range(0, n, batch):
        reqs = [make_request(seed, i) for i in range(base, min(n, base + batch))]
        runs = m.full_batch(np.stack([r.x for r in reqs]))
        for r, cps in zip(reqs, runs):
            ts += float(rng.exponential(1.0 / rate)) if rate > 0 else 0.0
            present = bool(rng.random() >= feedback_missing)
            delay = float(rng.exponential(feedback_delay)) if feedback_delay > 0 else 0.0
            yield {
                "request_id": r.request_id,
                "ts": round(ts, 6),
                "context": r.context,
                "features": r.features,
                "checkpoints": [[t, round(s, 6), a] for t, s, a in cps],
                "gold_answer_hash": str(r.label),
                "feedback": {"present": present, "delay_s": round(delay, 6)},
            }

