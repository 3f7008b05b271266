"""Train the reference anytime (multi-exit) network and export it to ONNX.

Data: scikit-learn's bundled digits (``sklearn.datasets.load_digits``: 1797
8x8 images, shipped inside the package, no download). Model: a stack of small
ReLU blocks, each followed by its own softmax exit, trained in numpy with deep
supervision (the sum of every exit's cross-entropy) and Gaussian-noise
augmentation so the ``domain=noisy`` inputs are in-distribution but harder.

Export: ONE ONNX model PER BLOCK (input: the previous hidden state, outputs:
the next hidden state and that exit's probabilities), so stopping early really
skips the later blocks' compute. Needs the ``onnx`` package (the ``train``
extra) only here; running the model needs onnxruntime only.

Run: ``python -m stopwise.clients.train_anytime [--out DIR] [--seed N]``
(about a few seconds on one core).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .anytime import HARD_CLASSES, METADATA_FILE, MODEL_DIR, NOISE_SIGMA, SPLIT_SEED, add_noise, load_data

WIDTHS = (4, 12, 32, 96)
N_CLASSES = 10


def _init(rng: np.random.Generator, d_in: int, d_out: int) -> tuple[np.ndarray, np.ndarray]:
    w = rng.normal(0.0, np.sqrt(2.0 / d_in), size=(d_in, d_out)).astype(np.float32)
    return w, np.zeros(d_out, dtype=np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class MultiExitNet:
    """Plain numpy multi-exit MLP with the input carried along (dense state):
    state_0 = x, h_i = ReLU(state_i W_i + b_i), exit_i = softmax(h_i V_i + c_i),
    state_{i+1} = [x, h_i]. Early blocks are narrow (cheap, weaker exits)."""

    def __init__(self, d_in: int, widths: tuple[int, ...], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params: list[np.ndarray] = []
        prev = d_in
        for w in widths:
            self.params += [*_init(rng, prev, w), *_init(rng, w, N_CLASSES)]
            prev = d_in + w
        self.widths = widths
        self.d_in = d_in

    def blocks(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        p = self.params
        return [tuple(p[4 * i: 4 * i + 4]) for i in range(len(self.widths))]  # type: ignore[misc]

    def _forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        states, hs, probs = [x], [], []
        for w, b, v, c in self.blocks():
            h = np.maximum(states[-1] @ w + b, 0.0)
            hs.append(h)
            probs.append(_softmax(h @ v + c))
            states.append(np.concatenate([x, h], axis=1))
        return states, hs, probs

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        return self._forward(x)[2]

    def grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Deep supervision: loss = mean over exits of cross-entropy."""
        n = len(x)
        states, hs, probs = self._forward(x)
        k = len(self.widths)
        loss = 0.0
        grads: list[np.ndarray] = [np.zeros_like(p) for p in self.params]
        dh_next = np.zeros_like(hs[-1])
        blocks = self.blocks()
        for i in reversed(range(k)):
            w, b, v, c = blocks[i]
            p = probs[i]
            loss += float(-np.log(p[np.arange(n), y] + 1e-12).mean()) / k
            dz = p.copy()
            dz[np.arange(n), y] -= 1.0
            dz /= n * k
            grads[4 * i + 2] = hs[i].T @ dz
            grads[4 * i + 3] = dz.sum(axis=0)
            dh = (dz @ v.T + dh_next) * (hs[i] > 0)
            grads[4 * i] = states[i].T @ dh
            grads[4 * i + 1] = dh.sum(axis=0)
            if i > 0:
                dh_next = (dh @ w.T)[:, self.d_in:]
        return loss, grads


def train(seed: int = 0, epochs: int = 80, lr: float = 0.005, batch: int = 64) -> tuple[MultiExitNet, dict]:
    """Train on the training split (noise-augmented); return the net and its metadata."""
    x_tr, y_tr, x_te, y_te, test_idx = load_data()
    rng = np.random.default_rng(seed)
    net = MultiExitNet(x_tr.shape[1], WIDTHS, seed)
    m = [np.zeros_like(p) for p in net.params]
    s = [np.zeros_like(p) for p in net.params]
    t = 0
    for _ in range(epochs):
        order = rng.permutation(len(x_tr))
        for start in range(0, len(order), batch):
            idx = order[start: start + batch]
            xb = x_tr[idx].copy()
            noisy = rng.random(len(idx)) < 0.5
            sig = rng.uniform(0.0, 1.5 * NOISE_SIGMA, size=(len(idx), 1)).astype(np.float32)
            xb = np.where(noisy[:, None], xb + rng.normal(size=xb.shape).astype(np.float32) * sig, xb)
            _, g = net.grads(xb, y_tr[idx])
            t += 1
            for j, gj in enumerate(g):
                m[j] = 0.9 * m[j] + 0.1 * gj
                s[j] = 0.999 * s[j] + 0.001 * gj * gj
                mh = m[j] / (1 - 0.9 ** t)
                sh = s[j] / (1 - 0.999 ** t)
                net.params[j] -= (lr * mh / (np.sqrt(sh) + 1e-8)).astype(np.float32)
    meta = {
        "dataset": "sklearn.datasets.load_digits",
        "seed": seed,
        "widths": list(WIDTHS),
        "noise_sigma": NOISE_SIGMA,
        "hard_classes": list(HARD_CLASSES),
        "split_seed": SPLIT_SEED,
        "n_test": int(len(test_idx)),
    }
    meta.update(evaluate(net, x_te, y_te, seed))
    return net, meta


def evaluate(net: MultiExitNet, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Accuracy and mean top probability per exit, clean and noisy, on the test split."""
    rng = np.random.default_rng(seed + 1)
    xn = add_noise(x, rng)
    out: dict = {}
    for name, xs in (("clean", x), ("noisy", xn)):
        probs = net.forward(xs)
        out[f"accuracy_{name}"] = [round(float((p.argmax(1) == y).mean()), 4) for p in probs]
        out[f"mean_score_{name}"] = [round(float(p.max(1).mean()), 4) for p in probs]
    return out


def block_macs(d_in: int, widths: tuple[int, ...]) -> list[int]:
    """Multiply-accumulates of each block including its exit head."""
    macs, prev = [], d_in
    for w in widths:
        macs.append(prev * w + w * N_CLASSES)
        prev = d_in + w
    return macs


def export_onnx(net: MultiExitNet, out_dir: Path, meta: dict) -> list[Path]:
    """Write ``block{i}.onnx`` per block and the metadata JSON; return the paths."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    prev = net.d_in
    for i, (w, b, v, c) in enumerate(net.blocks()):
        width = w.shape[1]
        inits = [numpy_helper.from_array(a.astype(np.float32), name) for a, name in
                 ((w, "W"), (b, "B"), (v, "V"), (c, "C"))]
        nodes = [
            helper.make_node("Gemm", ["h_in", "W", "B"], ["z"]),
            helper.make_node("Relu", ["z"], ["h"]),
            helper.make_node("Gemm", ["h", "V", "C"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ]
        if i == 0:  # the state carried forward is [x, h_i]
            nodes.append(helper.make_node("Concat", ["h_in", "h"], ["h_out"], axis=1))
        else:
            nodes += [
                helper.make_node("Slice", ["h_in", "s0", "s1", "s_ax"], ["x"]),
                helper.make_node("Concat", ["x", "h"], ["h_out"], axis=1),
            ]
            inits += [numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
                      numpy_helper.from_array(np.array([net.d_in], dtype=np.int64), "s1"),
                      numpy_helper.from_array(np.array([1], dtype=np.int64), "s_ax")]
        graph = helper.make_graph(
            nodes, f"stopwise_digits_block{i}",
            [helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["N", prev])],
            [helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["N", net.d_in + width]),
             helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", N_CLASSES])],
            initializer=inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="stopwise.train_anytime")
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = out_dir / f"block{i}.onnx"
        path.write_bytes(model.SerializeToString())
        paths.append(path)
        prev = net.d_in + width
    macs = block_macs(net.d_in, net.widths)
    meta = {**meta, "blocks": [f"block{i}.onnx" for i in range(len(net.widths))],
            "block_macs": macs, "cumulative_macs": [int(x) for x in np.cumsum(macs)]}
    (out_dir / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODEL_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=80)
    args = ap.parse_args(argv)
    net, meta = train(seed=args.seed, epochs=args.epochs)
    export_onnx(net, args.out, meta)
    import sys

    sys.stdout.write(json.dumps(meta) + "\n")


if __name__ == "__main__":  # pragma: no cover
    main()
