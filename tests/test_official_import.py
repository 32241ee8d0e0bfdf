"""``qcfs2lava import --from qcfs-official`` (issue 15): checkpoints of the QCFS authors' code.

The state dicts are built here from the layouts alone (exact key names and shapes, random weights,
randomised BatchNorm statistics, thresholds between 0.5 and 4), and the authors' forward passes are
re-implemented here from their formulas, sharing no code with qcfs2lava:

* ANN (new code, ``IF``): ``floor(clamp(x/θ, 0, 1)·L + 0.5)/L·θ``; (old code, ``MyFloor``):
  ``clamp(floor(x/θ·L + 0.5)/L, 0, 1)·θ``;
* SNN (new code, ``IF``): the image repeated T times, per IF layer ``mem = θ/2``; each step
  ``mem += x[t]``, ``spike = (mem − θ ≥ 0)·θ``, ``mem −= spike``; output = mean over t. The old code's
  ``ScaledNeuron`` is the same neuron in units of θ (``v = 1/2``, then ``v += x/θ``, fire at
  ``v ≥ 1``, ``v −= 1``, output ·θ); dividing by θ first rounds differently, so a potential within
  float rounding of θ can fire one step apart. Our float SNN is the ``IF`` form for both layouts:
  the tests hold it to that exactly; ``benchmarks/official_import.py`` also measures the
  ``ScaledNeuron`` form.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch.nn import functional as F

from qcfs2lava.cli import main
from qcfs2lava.official_import import NORMALIZATION, import_official

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
RESNETS = {"resnet18": ([2, 2, 2, 2], [64, 128, 256, 512]), "resnet34": ([3, 4, 6, 3], [64, 128, 256, 512]),
           "resnet20": ([3, 3, 3], [16, 32, 64])}
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224}
THR = {"new": "thresh", "old": "up"}
STEPS = (1, 2, 4, 8)


# --------------------------------------------------------------------------- their state dicts
class _Maker:
    def __init__(self, layout: str, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.layout, self.sd = layout, {}

    def _u(self, shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=self.g)

    def conv(self, key, c_out, c_in, k, bias):
        self.sd[f"{key}.weight"] = torch.randn(c_out, c_in, k, k, generator=self.g) * (2.0 / (c_in * k * k)) ** 0.5
        if bias:
            self.sd[f"{key}.bias"] = 0.1 * torch.randn(c_out, generator=self.g)

    def linear(self, key, n_out, n_in):
        self.sd[f"{key}.weight"] = torch.randn(n_out, n_in, generator=self.g) * (2.0 / n_in) ** 0.5
        self.sd[f"{key}.bias"] = 0.1 * torch.randn(n_out, generator=self.g)

    def bn(self, key, c):
        self.sd.update({f"{key}.weight": self._u(c, 0.5, 1.5), f"{key}.bias": 0.2 * torch.randn(c, generator=self.g),
                        f"{key}.running_mean": 0.2 * torch.randn(c, generator=self.g),
                        f"{key}.running_var": self._u(c, 0.5, 2.0),
                        f"{key}.num_batches_tracked": torch.tensor(100)})

    def act(self, key):
        self.sd[f"{key}.{THR[self.layout]}"] = self._u(1, 0.5, 4.0)


def vgg16_state(dataset, layout, seed=0):
    m = _Maker(layout, seed)
    c = 3
    for b, widths in enumerate(VGG16, start=1):
        for i, w in enumerate(widths):
            m.conv(f"layer{b}.{4 * i}", w, c, 3, bias=True)
            m.bn(f"layer{b}.{4 * i + 1}", w)
            m.act(f"layer{b}.{4 * i + 2}")
            c = w
    n_in = 512 * 7 * 7 if dataset == "imagenet" else 512
    m.linear("classifier.1", 4096, n_in)
    m.act("classifier.2")
    m.linear("classifier.4", 4096, 4096)
    m.act("classifier.5")
    m.linear("classifier.7", CLASSES[dataset], 4096)
    return m.sd


def resnet_state(arch, dataset, layout, seed=0):
    m = _Maker(layout, seed)
    blocks, widths = RESNETS[arch]
    m.conv("conv1.0", widths[0], 3, 3, bias=False)
    m.bn("conv1.1", widths[0])
    m.act("conv1.2")
    c = widths[0]
    for s, (n, w) in enumerate(zip(blocks, widths)):
        for j in range(n):
            key = f"conv{s + 2}_x.{j}"
            m.conv(f"{key}.residual_function.0", w, c, 3, bias=False)
            m.bn(f"{key}.residual_function.1", w)
            m.act(f"{key}.residual_function.2")
            m.conv(f"{key}.residual_function.3", w, w, 3, bias=False)
            m.bn(f"{key}.residual_function.4", w)
            if (s > 0 and j == 0) or c != w:
                m.conv(f"{key}.shortcut.0", w, c, 1, bias=False)
                m.bn(f"{key}.shortcut.1", w)
            m.act(f"{key}.{'act' if layout == 'new' else 'relu'}")
            c = w
    m.linear("fc", CLASSES[dataset], c)
    return m.sd


def their_state(arch, dataset, layout, seed=0):
    return vgg16_state(dataset, layout, seed) if arch == "vgg16" else resnet_state(arch, dataset, layout, seed)


# --------------------------------------------------------------------------- their forward
def _act(x, theta, L, layout, T, neuron):
    """The authors' activation: ANN (T = 0) or T-step IF over x of shape (T·N, ...), time-major."""
    if T == 0:
        if layout == "new":
            return torch.floor(torch.clamp(x / theta, 0, 1) * L + 0.5) / L * theta
        return torch.clamp(torch.floor(x / theta * L + 0.5) / L, 0, 1) * theta
    xs = x.view(T, -1, *x.shape[1:])
    out = []
    if neuron == "if":
        mem = 0.5 * theta
        for t in range(T):
            mem = mem + xs[t]
            spike = (mem - theta >= 0).float() * theta
            mem = mem - spike
            out.append(spike)
    else:
        v = 0.5
        for t in range(T):
            v = v + xs[t] / theta
            spike = (v - 1.0 >= 0).float()
            v = v - spike
            out.append(spike * theta)
    return torch.stack(out).flatten(0, 1)


def _bn(sd, key, x):
    return F.batch_norm(x, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                        sd[f"{key}.bias"], False, 0.0, 1e-5)


def their_forward(sd, arch, layout, x, L, T=0, neuron="if"):
    """Logits (N, K) of the ANN (T = 0), or per-step outputs (T, N, K) of the SNN with the new code's
    ``IF`` (``neuron="if"``) or the old code's ``ScaledNeuron`` (``"scaled"``)."""
    thr = THR[layout]

    def act(key, h):
        return _act(h, sd[f"{key}.{thr}"], L, layout, T, neuron)

    h = x.unsqueeze(0).repeat(T, 1, 1, 1, 1).flatten(0, 1) if T else x
    if arch == "vgg16":
        for b, widths in enumerate(VGG16, start=1):
            for i in range(len(widths)):
                h = F.conv2d(h, sd[f"layer{b}.{4 * i}.weight"], sd[f"layer{b}.{4 * i}.bias"], padding=1)
                h = act(f"layer{b}.{4 * i + 2}", _bn(sd, f"layer{b}.{4 * i + 1}", h))
            h = F.avg_pool2d(h, 2, 2)
        h = h.flatten(1)
        h = act("classifier.2", F.linear(h, sd["classifier.1.weight"], sd["classifier.1.bias"]))
        h = act("classifier.5", F.linear(h, sd["classifier.4.weight"], sd["classifier.4.bias"]))
        h = F.linear(h, sd["classifier.7.weight"], sd["classifier.7.bias"])
    else:
        blocks, _ = RESNETS[arch]
        h = act("conv1.2", _bn(sd, "conv1.1", F.conv2d(h, sd["conv1.0.weight"], padding=1)))
        for s, n in enumerate(blocks):
            for j in range(n):
                key, stride = f"conv{s + 2}_x.{j}", 2 if (s > 0 and j == 0) else 1
                r = F.conv2d(h, sd[f"{key}.residual_function.0.weight"], stride=stride, padding=1)
                r = act(f"{key}.residual_function.2", _bn(sd, f"{key}.residual_function.1", r))
                r = _bn(sd, f"{key}.residual_function.4", F.conv2d(r, sd[f"{key}.residual_function.3.weight"],
                                                                   padding=1))
                sc = h
                if f"{key}.shortcut.0.weight" in sd:
                    sc = _bn(sd, f"{key}.shortcut.1", F.conv2d(h, sd[f"{key}.shortcut.0.weight"], stride=stride))
                h = act(f"{key}.{'act' if layout == 'new' else 'relu'}", r + sc)
        h = F.adaptive_avg_pool2d(h, (1, 1)).view(h.shape[0], -1)
        h = F.linear(h, sd["fc.weight"], sd["fc.bias"])
    return h.view(T, -1, h.shape[-1]) if T else h


# --------------------------------------------------------------------------- helpers
def _save(sd, path, prefix=""):
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    return str(path)


def _images(dataset, n, seed=0):
    """Normalised images as the authors' test transform makes them (ToTensor, Normalize)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIZE[dataset], SIZE[dataset]), generator=g).float() / 255.0
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION[dataset])
    return (x - mean) / std


def max_deltas(model, sd, arch, layout, x, L, steps=STEPS, neuron="if"):
    """max |Δ| of the ANN logits and, per T in ``steps``, of the float SNN's mean output (ours − theirs)."""
    from qcfs2lava.snn import convert, simulate
    with torch.no_grad():
        ann = float((model(x) - their_forward(sd, arch, layout, x, L)).abs().max())
        if not steps:
            return ann, {}
        T = max(steps)
        ours = simulate(convert(model), x, T).logits                    # (T, N, K): mean over steps 1..t
        theirs = their_forward(sd, arch, layout, x, L, T, neuron).cumsum(0) / torch.arange(1, T + 1).view(T, 1, 1)
        snn = {t: float((ours[t - 1] - theirs[t - 1]).abs().max()) for t in steps}
    return ann, snn


# --------------------------------------------------------------------------- the import is exact
CASES = [("vgg16", "cifar10"), ("vgg16", "cifar100"), ("resnet18", "cifar10"), ("resnet20", "cifar10"),
         ("resnet34", "cifar100")]


@pytest.mark.parametrize("layout", ["new", "old"])
@pytest.mark.parametrize("arch,dataset", CASES)
def test_imported_network_computes_what_theirs_computes(tmp_path, arch, dataset, layout):
    sd = their_state(arch, dataset, layout, seed=1)
    if arch == "vgg16" and dataset == "cifar10" and layout == "new":
        assert len(sd) == 112                                   # the key count of their CIFAR-10 VGG-16
    path = _save(sd, tmp_path / "their.pth", prefix="module." if layout == "old" else "")
    imp = import_official(path, arch, dataset, L=4)
    assert imp.layout == layout and imp.meta["arch"] == f"official-{arch}"
    assert imp.meta["imported_from"]["module_prefix_removed"] == (layout == "old")
    x = _images(dataset, 3)
    ann, snn = max_deltas(imp.model, sd, arch, layout, x, 4)
    scale = float(their_forward(sd, arch, layout, x, 4).abs().max())
    assert ann <= 1e-5 * max(scale, 1.0), (ann, scale)
    for t, d in snn.items():
        assert d <= 1e-5 * max(scale, 1.0), (t, d, scale)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["new", "old"])
def test_imagenet_vgg16_imports_with_the_7x7_head(tmp_path, layout):
    """ImageNet VGG-16 (224 px, classifier.1 is 4096 × 512·7·7): the ANN only here (its SNN and the
    other data sets run in ``benchmarks/official_import.py``)."""
    sd = their_state("vgg16", "imagenet", layout, seed=2)
    imp = import_official(_save(sd, tmp_path / "their.pth"), "vgg16", "imagenet", L=8)
    assert imp.model.classifier[1].in_features == 512 * 7 * 7
    ann, _ = max_deltas(imp.model, sd, "vgg16", layout, _images("imagenet", 1), 8, steps=())
    assert ann <= 1e-3, ann


def test_the_checkpoint_is_self_describing(tmp_path):
    from qcfs2lava.checkpoint import load_checkpoint
    from qcfs2lava.util.fileio import file_sha256
    src = _save(their_state("resnet20", "cifar10", "new"), tmp_path / "r20.pth")
    out = tmp_path / "r20.pt"
    assert main(["import", src, "--from", "qcfs-official", "--arch", "resnet20", "--dataset", "cifar10",
                 "--L", "4", "-o", str(out)]) == 0
    ck = load_checkpoint(str(out))
    m = ck.meta
    assert m["arch"] == "official-resnet20" and m["L"] == 4 and m["dataset"] == "cifar10"
    assert m["normalization"]["std"] == list(NORMALIZATION["cifar10"][1])
    assert m["imported_from"]["sha256"] == file_sha256(src) and m["imported_from"]["layout"] == "new"
    sd = torch.load(src, weights_only=True)
    assert m["lam"]["conv2_x.1.act"] == pytest.approx(float(sd["conv2_x.1.act.thresh"]))
    assert len(m["lam"]) == 1 + 9 * 2


# --------------------------------------------------------------------------- refused with one line
def _refused(capsys, path, pattern, arch="resnet20", dataset="cifar10"):
    rc = main(["import", str(path), "--from", "qcfs-official", "--arch", arch, "--dataset", dataset,
               "--L", "4", "-o", str(os.path.dirname(str(path))) + "/out.pt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and pattern in err[0], err
    assert not os.path.exists(os.path.dirname(str(path)) + "/out.pt")


def test_wrong_key_wrong_shape_other_architecture_truncated(capsys, tmp_path):
    sd = their_state("resnet20", "cifar10", "new")
    bad = dict(sd)
    bad["conv2_x.0.extra.weight"] = torch.zeros(3, 3)
    _refused(capsys, _save(bad, tmp_path / "extra.pth"), "unexpected key 'conv2_x.0.extra.weight' (3, 3)")
    bad = dict(sd)
    del bad["conv3_x.0.shortcut.0.weight"]
    _refused(capsys, _save(bad, tmp_path / "missing.pth"), "missing key 'conv3_x.0.shortcut.0.weight' (32, 16, 1, 1)")
    bad = dict(sd)
    bad["fc.weight"] = torch.zeros(100, 64)
    _refused(capsys, _save(bad, tmp_path / "shape.pth"), "'fc.weight' has shape (100, 64)")
    # a ResNet-18 file imported as ResNet-20: the first key that does not fit is named
    _refused(capsys, _save(their_state("resnet18", "cifar10", "new"), tmp_path / "r18.pth"), "'conv1.0.weight' has shape (64, 3, 3, 3)")
    raw = open(_save(sd, tmp_path / "full.pth"), "rb").read()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) // 2])
    _refused(capsys, tmp_path / "cut.pth", "is not a readable PyTorch file")
    mixed = dict(sd)
    mixed["conv1.2.up"] = mixed["conv1.2.thresh"]
    _refused(capsys, _save(mixed, tmp_path / "mixed.pth"), "both 'thresh' and 'up'")
    relu = {k: v for k, v in sd.items() if not k.endswith(".thresh")}
    _refused(capsys, _save(relu, tmp_path / "relu.pth"), "no activation threshold")
    torch.save([1, 2], tmp_path / "list.pth")
    _refused(capsys, tmp_path / "list.pth", "holds a list, not a state dict")
    _refused(capsys, _save(sd, tmp_path / "ok.pth"), "unknown architecture 'vgg19'", arch="vgg19")


def test_a_pickled_payload_is_not_run(capsys, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/PWNED",))
    torch.save({"conv1.0.weight": Payload()}, tmp_path / "evil.pth")
    _refused(capsys, tmp_path / "evil.pth", "is not a readable PyTorch file")
    assert not (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------- on to Loihi's integers
@pytest.mark.lava
@pytest.mark.parametrize("arch,layout", [("resnet20", "new"), ("vgg16", "old")])
def test_imported_network_exports_and_lava_matches_refsim(tmp_path, arch, layout):
    """export → refsim and Lava on the same images: every spike and logit equal."""
    from conftest import require_lava
    require_lava()
    from netx_export.comparison import compare
    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.lava_runtime.runner import run_lava
    from netx_export.netx.validate import load_netx
    from netx_export.netx.write import write_netx
    from netx_export.sim import refsim
    from qcfs2lava.checkpoint import load_checkpoint
    src = _save(their_state(arch, "cifar10", layout, seed=3), tmp_path / "their.pth")
    out = tmp_path / "m.pt"
    assert main(["import", src, "--from", "qcfs-official", "--arch", arch, "--dataset", "cifar10", "--L", "4",
                 "-o", str(out)]) == 0
    net_path = str(tmp_path / "m.net")
    write_netx(quantize_checkpoint(load_checkpoint(str(out))).net, net_path)
    net = load_netx(net_path)
    x = _images("cifar10", 2, seed=4).numpy()
    ref = refsim.simulate(net, x, 4, record_spikes=True)
    assert any(s.any() for s in ref.spikes[:-1])                       # the hidden layers do fire
    c = compare(run_lava(net_path, x, T=4, qnet=net), ref)
    assert c["identical"] and c["spike_mismatches"] == 0 and c["spikes_compared"] > 0, c


def test_imagenet_stems_their_way_exports_ours_is_refused_with_the_reason(tmp_path):
    """Their ResNets keep the 3x3 stem without pooling at every size, which exports; the zoo's ImageNet
    stem (7x7/2 conv, QCFS, 3x3/2 pool, then the first block's fork) is refused with why and what would
    be needed. (96 px: the zoo switches to the ImageNet stem above 64 px.)"""
    import netx_export
    from netx_export.errors import ExportError
    from qcfs2lava import build_model, prepare_ann
    zoo = prepare_ann(build_model("resnet18", 10, 3, 96), L=4).eval()
    with pytest.raises(ExportError, match="the pool turns spikes into averages.*official-resnet18/34"):
        netx_export.export(zoo, str(tmp_path / "zoo.net"), (3, 96, 96))
    theirs = prepare_ann(build_model("official-resnet20", 10, 3, 96), L=4).eval()
    ex = netx_export.export(theirs, str(tmp_path / "theirs.net"), (3, 96, 96))
    assert ex.net.synaptic[0].kind == "conv" and ex.net.synaptic[0].weight.shape[-1] == 3
