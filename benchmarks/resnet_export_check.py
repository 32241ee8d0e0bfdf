#!/usr/bin/env python
"""ResNet-18/20/34 (CIFAR variants, untrained: PyTorch's default init, λ = 2) through the exporter:
shapes, shortcut delays and every Loihi range, checked and recorded (issue 7).

    python benchmarks/resnet_export_check.py

Writes ``benchmarks/results/resnet_export_check.json``: per network the synaptic layers, shortcuts
(identity / 1x1 conv, their delays), neurons, synapses, file size, and the largest vThMant, |bias|,
per-step input (against the 2^17 limit) and the fewest mantissa bits any layer uses, plus every
problem the file validator finds (expected: none) and the folded graph's max |logit| error.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from netx_export.report.energy import fan_out, shortcut_layer
from netx_export.convert.fixedpoint import INPUT_LIMIT, quantize
from netx_export.convert.graph import check_graph
from netx_export.convert.trace import trace
from netx_export.netx.read import read_netx
from netx_export.netx.validate import validate_file
from netx_export.netx.write import write_netx
from qcfs2lava.util.fileio import atomic_write_text
from qcfs2lava.models import build_model
from qcfs2lava.qcfs import prepare_ann

CIFAR_NORM = dict(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])


def check(arch: str, work: str) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = prepare_ann(build_model(arch, 10, 3, 32), L=4, lam_init=2.0).eval()
    g = trace(model, (3, 32, 32))
    err = check_graph(model, g, torch.randn(2, 3, 32, 32))
    net = quantize(g, metadata=dict(normalization=CIFAR_NORM, arch=arch))
    path = os.path.join(work, f"{arch}.net")
    write_netx(net, path)
    problems = validate_file(path)
    back = read_netx(path)
    syn = back.synaptic
    skips = [(i, s) for i, lay in enumerate(back.layers) for s in lay.skips]
    synapses = 0
    for lay in syn:
        synapses += int(fan_out(lay).sum())
        synapses += sum(int(fan_out(shortcut_layer(s, back.layers[s.source], lay)).sum()) for s in lay.skips)
    hidden = [r for r in back.report if r.role == "hidden"]
    return dict(
        arch=arch, seconds=round(time.perf_counter() - t0, 2), graph_max_logit_error=err,
        synaptic_layers=len(syn), shortcuts=len(skips),
        identity_shortcuts=sum(1 for _, s in skips if s.groups == s.weight.shape[0] and s.weight.shape[1:] == (1, 1, 1)),
        shortcut_delays=sorted({int(s.delay) for _, s in skips}),
        shortcut_shapes=[dict(into=i, source=int(s.source), weight=list(s.weight.shape), stride=list(s.stride),
                              delay=int(s.delay)) for i, s in skips],
        neurons=int(sum(np.prod(lay.shape) for lay in syn)), synapses=synapses,
        file_bytes=os.path.getsize(path), format_version=int(back.metadata["format_version"]),
        max_vth=max(r.vth for r in hidden), max_bias=max(r.bias_max for r in back.report[1:]),
        max_input=max(r.input_max for r in back.report[1:]), input_limit=INPUT_LIMIT,
        min_mantissa_bits=min(r.mantissa_max.bit_length() + 1 for r in back.report),
        warnings=[f"{r.name}: {w}" for r in back.report for w in r.warnings],
        problems=problems)


def main() -> int:
    out = os.path.join(ROOT, "benchmarks", "results", "resnet_export_check.json")
    res = []
    with tempfile.TemporaryDirectory() as work:
        for arch in ("resnet20", "resnet18", "resnet34"):
            r = check(arch, work)
            print(f"{arch}: {r['synaptic_layers']} layers, {r['shortcuts']} shortcuts (delays {r['shortcut_delays']}), "
                  f"{r['neurons']:,} neurons, {r['synapses']:,} synapses, max |input| {r['max_input']} < "
                  f"{INPUT_LIMIT}, problems: {len(r['problems'])}, {r['seconds']} s", flush=True)
            res.append(r)
    atomic_write_text(out, json.dumps(dict(command="python benchmarks/resnet_export_check.py", weights="untrained "
                                           "(PyTorch default init, BN running stats 0/1, λ = 2), CIFAR variants",
                                           machine=platform.processor() or platform.machine(), networks=res),
                                      indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if all(not r["problems"] for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())
