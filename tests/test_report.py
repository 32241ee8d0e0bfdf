"""netx_export.report.render / report_collect / report_command / report_figures: a report of the tiny digits
net, its figures and tables, atomic writing, and bad input as UserError."""
import base64
import json
import os
import re

import numpy as np
import pytest
import torch

from netx_export.report import figures as F
from netx_export.report.render import FIGURES, RasterLayer, ReportData, write_report
from qcfs2lava.util.errors import UserError

PNG = b"\x89PNG\r\n\x1a\n"
T = 8


@pytest.fixture(scope="module")
def exported(digits_model, tmp_path_factory):
    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.netx.write import write_netx
    from qcfs2lava.checkpoint import load_checkpoint
    path, _ = digits_model
    ex = quantize_checkpoint(load_checkpoint(path), recommended_T=T)
    net_path = str(tmp_path_factory.mktemp("report") / "model.net")
    write_netx(ex.net, net_path)
    return path, net_path


@pytest.fixture(scope="module")
def collected(exported):
    from netx_export.report.collect import collect_report_data
    ck, net = exported
    lines = []
    data = collect_report_data(ck, net, n=60, T=T, log=lines.append)
    return data, lines


def _tiny_data(**kw) -> ReportData:
    base = dict(title="hand-made", T=4, L=2, n=10, ann_accuracy=0.9, float_accuracy=[0.5, 0.7, 0.8, 0.9])
    base.update(kw)
    return ReportData(**base)


# --------------------------------------------------------------------------- figure math (Figure 2)
def _if_mean(z, theta, steps, v0=0.5):
    from qcfs2lava.low_latency import if_mean_output
    zt = torch.tensor(z, dtype=torch.float64)
    return if_mean_output(zt.expand(steps, *zt.shape), theta, v0).numpy()


def test_if_mean_output_matches_snn_if_step_and_eq11():
    from qcfs2lava.snn import if_step
    z = np.linspace(-0.3, 1.4, 341) + 0.0013      # off the exact step edges, where rounding decides
    theta, steps = 1.7, 5
    v = torch.full((z.size,), 0.5 * theta, dtype=torch.float64)
    out = torch.zeros_like(v)
    for _ in range(steps):
        v, o = if_step(v, torch.tensor(z), theta)
        out += o
    np.testing.assert_allclose(_if_mean(z, theta, steps), out.numpy() / steps)
    eq11 = theta * np.clip(np.floor((z * steps + 0.5 * theta) / theta) / steps, 0, 1)
    np.testing.assert_allclose(_if_mean(z, theta, steps), eq11)


def test_figure2_curves_and_theorems():
    from qcfs2lava.qcfs import qcfs
    z = np.linspace(-0.25, 1.25, 601)
    a, s = F.figure2_curves(z, 4, 0.5, 4)
    np.testing.assert_allclose(a, qcfs(torch.tensor(z), 1.0, 4).numpy())
    # T = L with v(0) = θ/2: the IF neuron's mean output equals QCFS exactly (zero conversion error)
    np.testing.assert_allclose(s, a)
    # T ≠ L: not equal, but the mean error over z uniform in [0, λ] is zero (Theorem 2) ...
    zu = (np.arange(40000) + 0.5) / 40000
    for steps in (2, 3, 8, 16):
        a, s = F.figure2_curves(zu, 4, 0.5, steps)
        assert not np.allclose(s, a)
        assert abs(np.mean(s - a)) < 1e-3
    # ... which the shift makes so: without it (QCF, φ = 0, v(0) = 0) the mean error is not zero
    a, s = F.figure2_curves(zu, 4, 0.0, 8)
    assert abs(np.mean(s - a)) > 0.05
    assert F.activation_T_values(4) == [2, 4, 8, 16] and F.activation_T_values(8) == [2, 8, 16]


def test_each_figure_is_a_png():
    assert F.accuracy_png(8, 0.9, {"a": [0.1 * i for i in range(1, 9)]}, {"lava": {2: 0.5, 8: 0.8}}).startswith(PNG)
    assert F.activation_png(4).startswith(PNG)
    assert F.firing_rates_png(["a", "b"], {"x": [0.1, 0.2], "y": [0.1, float("nan")]}).startswith(PNG)
    assert F.raster_png([("a", np.eye(5, 3, dtype=bool), 10)]).startswith(PNG)


# --------------------------------------------------------------------------- collect
def test_collect_report_data(collected):
    data, lines = collected
    assert [s[:5] for s in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert data.n == 60 and data.T == T and data.L == 4 and data.phi == 0.5
    assert len(data.float_accuracy) == T and len(data.fixed_accuracy) == T
    assert 0.8 < data.ann_accuracy <= 1 and data.fixed_accuracy[-1] > 0.8 and data.float_accuracy[-1] > 0.8
    assert len(data.layer_names) == 4 and set(data.firing_rates) == {"float SNN", "fixed-point SNN"}
    for rates in data.firing_rates.values():
        assert len(rates) == 4 and all(0 < r < 1 for r in rates)
    # float and fixed point spike at nearly the same rates (equivalence 2 of docs/architecture.md)
    np.testing.assert_allclose(data.firing_rates["float SNN"], data.firing_rates["fixed-point SNN"], rtol=0.1)
    assert 1 <= len(data.raster) <= 4
    for r in data.raster:
        assert r.spikes.shape == (T, len(r.neurons)) and r.spikes.any() and len(r.neurons) <= 40
    assert len(data.quantization) == 5
    e = data.energy
    # tiny net's own MACs (pooling not folded): conv 1→16, 16→32 on 8×8, 32→32 on 4×4, dense 128→64, 64→10
    assert [c.macs for c in e.layers] == [16 * 64 * 9, 32 * 64 * 144, 32 * 16 * 288, 64 * 128, 10 * 64]
    assert e.macs_source == "PyTorch model"
    assert all(c.exact for c in e.layers) and e.sops > 0 and e.latency_steps == T + 4
    # spikes out of layer j are the spikes into layer j+1
    for a, b in zip(e.layers, e.layers[1:]):
        assert b.spikes_in == pytest.approx(a.spikes_out)
    assert data.provenance["checkpoint sha256"] and data.provenance["test samples"] == 60
    assert [(p.mode, p.storage) for p in data.plans] == [("microcode", "expanded"), ("microcode", "shared"),
                                                         ("stock", "expanded"), ("stock", "shared")]
    assert all(p.neurons == sum(c.neurons for c in e.layers) + (p.mode == "stock") for p in data.plans)


def test_collect_reads_lava_json(exported, tmp_path):
    from netx_export.report.collect import collect_report_data
    ck, net = exported
    lava = tmp_path / "lava.json"
    lava.write_text(json.dumps(dict(backend="lava", timing="aligned", n=5, accuracy=[0.2, 0.4, 0.6, 0.8] * 2)))
    lines = []
    data = collect_report_data(ck, net, n=10, T=T, lava_json=str(lava), log=lines.append)
    assert data.lava_n == 5 and data.lava_accuracy[1] == 0.2 and data.lava_accuracy[8] == 0.8
    # the fixed point on the same 5 samples, to compare with (these made-up Lava numbers differ)
    assert len(data.lava_reference) == T and any("differ at t" in s for s in lines)
    real = dict(backend="lava", timing="aligned", n=5, accuracy=list(data.lava_reference))
    lava.write_text(json.dumps(real))
    lines = []
    collect_report_data(ck, net, n=10, T=T, lava_json=str(lava), log=lines.append)
    assert any("equal at every t" in s for s in lines)
    # Lava timing: the readout lags (synaptic layers − 1) = 4 steps; points move back onto aligned t
    lava.write_text(json.dumps(dict(backend="lava", timing="lava", n=5, accuracy=[0.0] * 4 + [0.5] * 8)))
    data = collect_report_data(ck, net, n=10, T=T, lava_json=str(lava), log=lambda s: None)
    assert sorted(data.lava_accuracy) == list(range(1, 9)) and set(data.lava_accuracy.values()) == {0.5}


@pytest.mark.parametrize("content, match", [("{not json", "not JSON"), (json.dumps({"n": 3}), "no accuracy list"),
                                            (json.dumps({"backend": "reference", "accuracy": [0.5]}), "not Lava")])
def test_bad_lava_json_is_user_error(exported, tmp_path, content, match):
    from netx_export.report.collect import collect_report_data
    ck, net = exported
    p = tmp_path / "lava.json"
    p.write_text(content)
    with pytest.raises(UserError, match=match):
        collect_report_data(ck, net, n=5, T=2, lava_json=str(p), log=lambda s: None)


def test_collect_bad_input_is_user_error(exported, tmp_path):
    from netx_export.netx.read import read_netx
    from netx_export.netx.write import write_netx
    from netx_export.report.collect import collect_report_data
    ck, net = exported
    quiet = dict(log=lambda s: None)
    with pytest.raises(UserError, match="T must"):
        collect_report_data(ck, net, T=0, **quiet)
    with pytest.raises(UserError, match="n must"):
        collect_report_data(ck, net, n=0, **quiet)
    with pytest.raises(UserError):
        collect_report_data(str(tmp_path / "missing.pt"), net, **quiet)
    with pytest.raises(UserError):
        collect_report_data(ck, str(tmp_path / "missing.net"), **quiet)
    with pytest.raises(UserError):
        collect_report_data(ck, str(tmp_path / "missing.json"), **quiet)
    lava = tmp_path / "lava.json"
    lava.write_text(json.dumps(dict(backend="lava", source_sha256="1" * 64, n=2, accuracy=[0.5])))
    with pytest.raises(UserError, match="another network"):
        collect_report_data(ck, net, lava_json=str(lava), **quiet)
    other = read_netx(net)
    other.metadata["source_sha256"] = "0" * 64
    write_netx(other, str(tmp_path / "other.net"))
    with pytest.raises(UserError, match="another checkpoint"):
        collect_report_data(ck, str(tmp_path / "other.net"), **quiet)


# --------------------------------------------------------------------------- write
def test_html_report_is_self_contained(collected, tmp_path):
    data, _ = collected
    path = write_report(data, str(tmp_path / "out"), "html")
    assert path == str(tmp_path / "out" / "report.html") and os.listdir(tmp_path / "out") == ["report.html"]
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    imgs = re.findall(r'<figure id="fig-(\w+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', text)
    assert [k for k, _ in imgs] == list(FIGURES)
    assert all(base64.b64decode(b).startswith(PNG) for _, b in imgs)
    for cls in ("accuracy", "quantization", "energy", "energy-summary", "plan", "provenance"):
        assert f'<table class="{cls}">' in text
    assert "(g) Loihi 2 resource plan" in text and "fits one Loihi 2 chip" in text
    assert "77 fJ/SOP" in text and "Loihi on-chip estimate" in text and "Davies et al. 2018" in text
    assert data.provenance["checkpoint sha256"] in text
    assert "http" not in text.replace("http-equiv", "")        # nothing fetched from elsewhere


def test_markdown_report_with_png_files(collected, tmp_path):
    data, _ = collected
    path = write_report(data, str(tmp_path), "md")
    files = sorted(os.listdir(tmp_path))
    assert files == sorted(["report.md"] + [f"report_{k}.png" for k in FIGURES])
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    for k in FIGURES:
        assert f"](report_{k}.png)" in text
        assert (tmp_path / f"report_{k}.png").read_bytes().startswith(PNG)
    assert "## (e) Quantization per layer" in text and "## (f) Operations and energy per sample" in text


def test_report_from_hand_made_data_leaves_out_missing_parts(tmp_path):
    """The demo builds ReportData itself: only what it has is shown."""
    path = write_report(_tiny_data(), str(tmp_path), "html")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    assert re.findall(r'<figure id="fig-(\w+)"', text) == ["accuracy", "activation"]
    assert "<table class=\"quantization\">" not in text and "(f) Operations" not in text
    raster = (RasterLayer("l0", np.eye(4, 3, dtype=bool), (0, 5, 9), 10),)
    data = _tiny_data(layer_names=("l0",), firing_rates={"float SNN": (0.25,)}, raster=raster,
                      lava_accuracy={2: 0.6, 4: 0.85}, lava_n=10)
    with open(write_report(data, str(tmp_path), "html"), encoding="utf-8") as fh:
        text = fh.read()
    assert re.findall(r'<figure id="fig-(\w+)"', text) == list(FIGURES)
    assert "Lava (10 samples)" in text and "85.00" in text


def test_write_report_bad_input_is_user_error(tmp_path):
    with pytest.raises(UserError, match="format"):
        write_report(_tiny_data(), str(tmp_path), "pdf")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        write_report(_tiny_data(), str(f), "html")
    with pytest.raises(UserError, match="T >= 1"):
        write_report(_tiny_data(T=0, float_accuracy=()), str(tmp_path / "a"), "html")
    with pytest.raises(UserError, match="accuracies for T"):
        write_report(_tiny_data(float_accuracy=[0.1] * 5), str(tmp_path / "a"), "html")
    with pytest.raises(UserError, match="firing rates"):
        write_report(_tiny_data(layer_names=("a", "b"), firing_rates={"x": (0.1,)}), str(tmp_path / "a"), "html")
    with pytest.raises(UserError, match="outside"):
        write_report(_tiny_data(lava_accuracy={9: 0.5}), str(tmp_path / "a"), "html")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_failure_leaves_no_half_written_file(tmp_path, monkeypatch, fmt):
    out = tmp_path / "out"
    write_report(_tiny_data(), str(out), fmt)
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}

    def boom(*a, **k):
        raise RuntimeError("plotting failed")
    # a figure fails after others were rendered: nothing is written, the old report stays intact
    monkeypatch.setattr(F, "activation_png", boom)
    with pytest.raises(RuntimeError):
        write_report(_tiny_data(title="second"), str(out), fmt)
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    monkeypatch.undo()
    # writing the document itself fails: no temporary or partial file is left behind
    import netx_export.report.render as R

    def fail_write(path, text):
        def w(tmp):
            with open(tmp, "w") as fh:
                fh.write(text[:10])
            raise OSError("disk full")
        from qcfs2lava.util.fileio import atomic_write
        atomic_write(path, w)
    monkeypatch.setattr(R, "atomic_write_text", fail_write)
    with pytest.raises(UserError, match="cannot write .*disk full"):
        write_report(_tiny_data(title="third"), str(out), fmt)
    assert sorted(os.listdir(out)) == sorted(before)
    assert (out / f"report.{fmt}").read_bytes() == before[f"report.{fmt}"]


# --------------------------------------------------------------------------- command
def _parser():
    from qcfs2lava.cli import build_parser
    return build_parser()


def test_report_command(exported, tmp_path, capsys):
    ck, net = exported
    a = _parser().parse_args(["report", ck, net, "--n", "20", "--T", "4", "-o", str(tmp_path), "--format", "md"])
    assert a.func(a) == 0
    out = capsys.readouterr().out
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "Loihi estimate", "algorithmic latency", "wrote "):
        assert stage in out
    assert (tmp_path / "report.md").exists()


def test_report_command_bad_input(exported, tmp_path):
    ck, net = exported
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["report", ck, net, "--format", "pdf"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["report", ck, net, "--T", "0", "-o", str(tmp_path)])
    assert e.value.code == 2
