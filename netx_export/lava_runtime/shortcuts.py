"""Residual shortcuts (format version 2) added to a Lava network that lava-dl's NetX loader built.

NetX builds the main chain only (it ignores ``layer/<i>/skip``). For each shortcut this module
adds, beside that chain, the fan-in into the target layer's neurons: its ``Conv`` synapse connects
to the same ``a_in`` port as the layer's own synapse, and Lava sums everything a port receives —
the current of the two paths adds before the neuron, as the ANN adds before its activation.

Delay. Every synapse delivers one step late, so a shortcut that skips ``delay`` + 1 synaptic layers
of the main path would bring the source's spikes ``delay`` steps early. ``delay`` relay neurons in
front of its synapse fix that: each is an ``IF_SUB`` with vThMant 1 and v(0) 0 behind a depthwise
1x1 conv of weight 1, so it fires exactly when its input spiked one step before and returns to 0.
Relays are ordinary neurons and synapses, so the construction maps onto Loihi 2 cores unchanged;
they reset with the virtual layer index they stand in for (source + k), like the layers around them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netx_export.convert.fixedpoint import QNetwork, QSkip
from netx_export.lava_runtime.layout import lava_conv_weight

__all__ = ["wire_shortcuts"]


# Lava's Conv stores ``groups`` as int8, so 128 or more groups wrap in Lava's own conv model (``--conv
# lava``; ours reads them from the shapes, netx_export.lava.conv_models._groups). Such a conv (a relay's
# or an identity shortcut's depthwise ones) becomes the same conv with one group: block-diagonal weights.
_INT8_GROUPS = 127


def _one_group(weight: np.ndarray, groups: int) -> np.ndarray:
    """Grouped conv weights (C_out, C_in/G, kH, kW) as the equal conv with one group (C_out, C_in, kH, kW)."""
    c_out, cg = int(weight.shape[0]), int(weight.shape[1])
    full = np.zeros((c_out, cg * groups) + tuple(weight.shape[2:]), weight.dtype)
    per = c_out // groups
    for o in range(c_out):
        g = o // per
        full[o, g * cg:(g + 1) * cg] = weight[o]
    return full


def _conv(weight: np.ndarray, in_shape: tuple[int, ...], sk: QSkip | None = None) -> Any:
    from lava.proc.conv.process import Conv
    geo = dict(padding=(0, 0), stride=(1, 1), dilation=(1, 1), groups=int(weight.shape[0]))
    if sk is not None:
        geo = dict(padding=tuple(sk.padding[::-1]), stride=tuple(sk.stride[::-1]), dilation=tuple(sk.dilation[::-1]),
                   groups=int(sk.groups))
    if geo["groups"] > _INT8_GROUPS:
        weight, geo["groups"] = _one_group(weight, geo["groups"]), 1
    return Conv(weight=lava_conv_weight(weight), input_shape=tuple(in_shape), **geo)


def wire_shortcuts(blocks: list, qnet: QNetwork, T: int, offsets: list[int], flush: bool) -> list:
    """Connect every shortcut of ``qnet`` into the NetX ``blocks`` (one per synaptic layer, as built by
    ``hdf5.Network``). ``offsets``: per block, the step offset of its per-sample reset (the runner's
    schedule); relays reset as the layer index they stand for. Returns the processes it created."""
    from netx_export.lava import IF_SUB

    syn_index = {i: k for k, i in enumerate(i for i, lay in enumerate(qnet.layers) if lay.kind != "flatten")}
    made: list = []
    for i, lay in enumerate(qnet.layers):
        for sk in lay.skips:
            src, dst = syn_index[sk.source], syn_index[i]
            port = blocks[src].neuron.s_out
            shape = tuple(blocks[src].neuron.shape)
            channels = shape[-1]
            for k in range(1, sk.delay + 1):
                link = _conv(np.ones((channels, 1, 1, 1), np.int64), shape)
                relay = IF_SUB(shape=shape, vth=1, v=0, v_init=0, du=4095, dv=0, bias_mant=0, bias_exp=6,
                               reset_interval=T, reset_offset=(offsets[min(src + k, len(offsets) - 1)] + 1) % T,
                               flush=flush)
                port.connect(link.s_in)
                link.a_out.connect(relay.a_in)
                port = relay.s_out
                made += [link, relay]
            conv = _conv(sk.weight, shape, sk)
            target = blocks[dst].neuron
            if tuple(conv.a_out.shape) != tuple(target.a_in.shape):
                raise ValueError(f"shortcut {sk.name}: Lava conv gives {conv.a_out.shape}, layer {i} takes "
                                 f"{target.a_in.shape}")
            port.connect(conv.s_in)
            conv.a_out.connect(target.a_in)
            made.append(conv)
    return made
