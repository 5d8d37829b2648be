"""Tests of attrbench.metrics.cost: CallCounter counts exactly on a known call sequence and
leaves no hooks, PeakMemory / time_call behave, and the three metrics read what the runner
stored (TimeMs aggregates with the median)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from attrbench.catalog import METRICS
from attrbench.interfaces import EvalBatch
from attrbench.metrics.cost import CallCounter, PeakMemory, time_call


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))


def test_call_counter_exact_sequence():
    net = tiny_net()
    with CallCounter(net) as cc:
        with torch.no_grad():
            net(torch.zeros(4, 3, 2, 2))  # forward 4
            net(torch.zeros(1, 3, 2, 2))  # forward 1
        x = torch.zeros(3, 3, 2, 2, requires_grad=True)
        net(x)[:, 0].sum().backward()  # forward 3 + backward 3
        y = torch.randn(2, 3, 2, 2, requires_grad=True)
        torch.autograd.grad(net(y).sum(), y)  # forward 2 + backward 2
        out = net(torch.zeros(5, 3, 2, 2))  # params require grad: forward 5, no backward yet
        net[1](torch.zeros(7, 12))  # a submodule call: not the classifier, not counted
    out.sum().backward()  # after exit: not counted
    assert (cc.forward_rows, cc.backward_rows, cc.forward_calls) == (15, 5, 5)
    assert cc.per_image(5) == pytest.approx(4.0)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    with pytest.raises(ValueError, match="n_images"):
        cc.per_image(0)


def test_call_counter_removes_hooks_on_error_and_restarts():
    net = tiny_net()
    with pytest.raises(RuntimeError), CallCounter(net):
        net(torch.zeros(2, 3, 2, 2))
        raise RuntimeError("boom")
    assert len(net._forward_hooks) == 0
    cc = CallCounter(net)
    with cc:
        net(torch.zeros(2, 3, 2, 2))
    with cc:  # re-entering resets the counts
        net(torch.zeros(1, 3, 2, 2))
    assert cc.forward_rows == 1


def test_call_counter_through_a_method_call():
    from attrbench.methods.sanity import Center

    net = tiny_net()
    net.num_classes = 3
    with CallCounter(net) as cc:
        Center(net).attribute(torch.zeros(2, 3, 2, 2), torch.tensor([0, 1]))
    assert (cc.forward_rows, cc.backward_rows) == (0, 0)  # Center never calls the model

    # a gradient-style call sequence: forward 2, backward 2
    with CallCounter(net) as cc:
        x = torch.zeros(2, 3, 2, 2, requires_grad=True)
        with torch.enable_grad():
            torch.autograd.grad(net(x)[:, 1].sum(), x)
    assert (cc.forward_rows, cc.backward_rows) == (2, 2)


def test_time_call_and_peak_memory():
    out, ms = time_call(lambda a, b: (time.sleep(0.02), a + b)[1], "cpu", 1, b=2)
    assert out == 3 and 15 < ms < 2000
    with PeakMemory("cpu") as pm:
        pass
    assert pm.mb >= 0 and pm.peak_mb > 0


_PEAK_GROWTH = """
import resource, torch
from attrbench.metrics.cost import PeakMemory

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
extra = max(0.0, peak - rss_mb()) + 48  # enough to raise the high-water mark by ~48 MB
with PeakMemory("cpu") as pm:
    t = torch.ones(int(extra * 2**20 / 4))
    del t
print(pm.mb)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_cpu_sees_growth():
    # a fresh process: in this one, earlier tests may have tuned the allocator (attrbench's CLI
    # keeps freed memory resident), so a new block can come from memory already counted
    out = subprocess.run([sys.executable, "-c", _PEAK_GROWTH], capture_output=True, text=True,
                         check=True, timeout=120)
    assert float(out.stdout.strip().splitlines()[-1]) > 30


def make_batch(b, time_ms=None, extras=None):
    return EvalBatch(images=torch.zeros(b, 3, 4, 4), labels=torch.ones(b, 2),
                     pair_image=torch.arange(b), pair_class=torch.zeros(b, dtype=torch.long),
                     class_masks=torch.zeros(b, 4, 4), merged=torch.zeros(b, 4, 4),
                     time_ms=time_ms, extras=extras or {})


def test_cost_metrics_read_the_batch():
    t = METRICS.get("time_ms")()
    assert t.update(make_batch(3, torch.tensor([10.0, 1.0, 1000.0]))) == [10.0, 1.0, 1000.0]
    t.update(make_batch(2, torch.tensor([2.0, math.nan])))
    assert t.compute() == 6.0  # median of the finite values 1, 2, 10, 1000
    calls = METRICS.get("model_calls")()
    v = calls.update(make_batch(2, extras={"model_calls": torch.tensor([33.0, 31.0])}))
    assert v == [33.0, 31.0] and calls.compute() == 32.0
    assert all(math.isnan(x) for x in calls.update(make_batch(2)))
    mem = METRICS.get("peak_mem_mb")()
    assert mem.update(make_batch(3, extras={"peak_mem_mb": 12.5})) == [12.5] * 3
    with pytest.raises(ValueError, match="one value per image"):
        calls.update(make_batch(2, extras={"model_calls": torch.tensor([1.0])}))
    for name in ("time_ms", "model_calls", "peak_mem_mb"):
        cls = METRICS.get(name)
        assert cls.higher_is_better is False and cls.version == 1 and cls.kind == "cost"


def test_call_counter_over_a_long_block_does_not_keep_every_hook():
    from attrbench.metrics.cost import CallCounter

    model = nn.Linear(4, 2)
    with CallCounter(model) as c:
        for _ in range(1000):
            model(torch.randn(3, 4, requires_grad=True)).sum().backward()
        assert len(c._handles) < 300  # handles of freed outputs are dropped
    assert c.forward_rows == c.backward_rows == 3000 and c._handles == []
    assert c.forward_sizes == {3: 1000} and c.backward_sizes == {3: 1000}
