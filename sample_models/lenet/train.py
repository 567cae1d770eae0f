"""Train the LeNet sample model on the mnist5k train split and export it.

Run: .venv/bin/python sample_models/lenet/train.py
Writes lenet-symbol.json and lenet-0000.params next to this file.
"""

import os
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root, for mrt_core
from mrt_core.datasets import load_dataset  # noqa: E402

NAME = "lenet"
EPOCHS = 20
BATCH = 64
LR = 1e-3
DECAY_AT = 15


def build():
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(16, kernel_size=5, use_bias=True),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.MaxPool2D(pool_size=2, strides=2),
        nn.Conv2D(32, kernel_size=5, use_bias=True),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.MaxPool2D(pool_size=2, strides=2),
        nn.Flatten(),
        nn.Dense(128, use_bias=True),
        nn.Activation("relu"),
        nn.Dropout(0.2),
        nn.Dense(10, use_bias=True),  # logits: no softmax in the exported graph
    )
    return net


def shift(x, rng, pad=2):
    """Random +-pad pixel translation: cheap augmentation for a 3500-image train set."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(x)
    dy, dx = rng.randint(0, 2 * pad + 1, size=(2, n))
    for k in range(n):
        out[k] = padded[k, :, dy[k]:dy[k] + h, dx[k]:dx[k] + w]
    return out


def accuracy(net, x, y, batch=500):
    correct = 0
    for i in range(0, len(x), batch):
        out = net(nd.array(x[i:i + batch]))
        correct += int((out.argmax(axis=1).asnumpy().astype(np.int64) == y[i:i + batch]).sum())
    return correct / len(x)


def main():
    mx.random.seed(0)
    np.random.seed(0)
    ctx = mx.cpu()
    ds = load_dataset("mnist5k")
    x_train, y_train = ds.x_train, ds.y_train

    net = build()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": LR})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    t0 = time.time()
    for epoch in range(EPOCHS):
        if epoch == DECAY_AT:
            trainer.set_learning_rate(LR * 0.1)  # settle into a minimum for the last epochs
        perm = np.random.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = nd.array(shift(x_train[idx], np.random)), nd.array(y_train[idx])
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(len(idx))
            total += float(loss.sum().asscalar())
        print(f"epoch {epoch + 1}/{EPOCHS}  loss {total / len(perm):.4f}  "
              f"test acc {accuracy(net, ds.x_test, ds.y_test):.4f}", flush=True)
    train_s = time.time() - t0

    acc = accuracy(net, ds.x_test, ds.y_test)
    print(f"test accuracy {acc:.4f} on {len(ds.y_test)} images; training took {train_s:.1f} s")
    net.export(os.path.join(HERE, NAME), epoch=0)
    print(f"exported {NAME}-symbol.json and {NAME}-0000.params to {HERE}")


if __name__ == "__main__":
    main()
