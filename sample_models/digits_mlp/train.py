"""Train the tiny MLP sample model on the scikit-learn digits train split and export it.

Run: .venv/bin/python sample_models/digits_mlp/train.py
Writes digits_mlp-symbol.json and digits_mlp-0000.params next to this file.
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

NAME = "digits_mlp"
EPOCHS = 60
DECAY_AT = 45
BATCH = 32
LR = 2e-3


def build():
    net = nn.HybridSequential()
    net.add(nn.Flatten(),
            nn.Dense(64, use_bias=True),
            nn.Activation("relu"),
            nn.Dense(10, use_bias=True))  # logits
    return net


def accuracy(net, x, y):
    pred = net(nd.array(x)).argmax(axis=1).asnumpy().astype(np.int64)
    return float((pred == y).mean())


def main():
    mx.random.seed(0)
    np.random.seed(0)
    ctx = mx.cpu()
    ds = load_dataset("digits")
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
            xb, yb = nd.array(x_train[idx]), nd.array(y_train[idx])
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(len(idx))
            total += float(loss.sum().asscalar())
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}/{EPOCHS}  loss {total / len(perm):.4f}  "
                  f"test acc {accuracy(net, ds.x_test, ds.y_test):.4f}", flush=True)
    train_s = time.time() - t0

    acc = accuracy(net, ds.x_test, ds.y_test)
    print(f"test accuracy {acc:.4f} on {len(ds.y_test)} images; training took {train_s:.1f} s")
    net.export(os.path.join(HERE, NAME), epoch=0)
    print(f"exported {NAME}-symbol.json and {NAME}-0000.params to {HERE}")


if __name__ == "__main__":
    main()
