"""Train the small residual sample model on the mnist5k train split and export it.

Run: .venv/bin/python sample_models/resnet/train.py
Writes resnet-symbol.json and resnet-0000.params next to this file.

The net is built to exercise the quantizer's graph ops: an explicit
elemwise_add residual join, a depthwise conv (num_group), a stride-2 conv,
a Concat of two branches, avg pooling and global avg pooling.
"""

import json
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

NAME = "resnet"
EPOCHS = 20
DECAY_AT = 15
BATCH = 64
LR = 2e-3


def conv_bn(channels, kernel=3, stride=1, groups=1, relu=True):
    """Conv + BN (+ relu); padding keeps the size for odd kernels."""
    blk = nn.HybridSequential()
    blk.add(nn.Conv2D(channels, kernel, strides=stride, padding=kernel // 2,
                      groups=groups, use_bias=False),
            nn.BatchNorm())
    if relu:
        blk.add(nn.Activation("relu"))
    return blk


class Residual(nn.HybridBlock):
    """Two 3x3 conv+BN joined to the input with an explicit elemwise_add."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body1 = conv_bn(channels)
            self.body2 = conv_bn(channels, relu=False)

    def hybrid_forward(self, F, x):
        y = self.body2(self.body1(x))
        return F.relu(F.elemwise_add(x, y))


class Branches(nn.HybridBlock):
    """A 1x1 branch and a 3x3 branch, joined with Concat along channels."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.b1 = conv_bn(channels, kernel=1)
            self.b3 = conv_bn(channels, kernel=3)

    def hybrid_forward(self, F, x):
        return F.concat(self.b1(x), self.b3(x), dim=1)


class SmallResNet(nn.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.stem = conv_bn(16)                        # 16x28x28
            self.res = Residual(16)                        # 16x28x28
            self.dw = conv_bn(16, groups=16)               # depthwise, 16x28x28
            self.down = conv_bn(32, stride=2)              # 32x14x14
            self.branches = Branches(32)                   # 64x14x14
            self.pool = nn.AvgPool2D(pool_size=2, strides=2)  # 64x7x7
            self.head_conv = conv_bn(64)                   # 64x7x7
            self.gap = nn.GlobalAvgPool2D()                # 64x1x1
            self.flat = nn.Flatten()
            self.fc = nn.Dense(10)                         # logits

    def hybrid_forward(self, F, x):
        x = self.down(self.dw(self.res(self.stem(x))))
        x = self.head_conv(self.pool(self.branches(x)))
        return self.fc(self.flat(self.gap(x)))


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

    net = SmallResNet(prefix="resnet_")
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

    # The quantizer tests rely on these ops being in the graph.
    with open(os.path.join(HERE, f"{NAME}-symbol.json")) as f:
        nodes = json.load(f)["nodes"]
    ops = {n["op"] for n in nodes}
    for op in ("elemwise_add", "Concat", "Convolution", "Pooling"):
        assert op in ops, f"exported graph lacks {op}"
    assert any(n["op"] == "Convolution" and n.get("attrs", {}).get("num_group", "1") != "1"
               for n in nodes), "no depthwise conv (num_group) in the graph"
    assert any(n["op"] == "Pooling" and n.get("attrs", {}).get("global_pool") == "True"
               for n in nodes), "no global pooling in the graph"
    print(f"exported {NAME}-symbol.json and {NAME}-0000.params to {HERE}; ops: {sorted(ops)}")


if __name__ == "__main__":
    main()
