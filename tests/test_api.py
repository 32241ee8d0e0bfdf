"""The public Python API (both packages' ``__init__``), per-sample outputs of ``evaluate``, the
deprecated CLI spellings, and the Lava test guard."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import conftest
from conftest import ROOT, run_cli


@pytest.mark.parametrize("pkg", ["qcfs2lava", "netx_export"])
def test_every_api_name_resolves(pkg):
    import importlib
    import pkgutil
    import types
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):     # every module loaded: none may shadow a name
        if not info.name.startswith(("netx_export.lava.", "qcfs2lava.__main__")):
            importlib.import_module(info.name)
    assert mod.__all__ and sorted(dir(mod)) == sorted(mod.__all__)
    for name in mod.__all__:
        value = getattr(mod, name)
        assert value is not None and not isinstance(value, types.ModuleType), name
    with pytest.raises(AttributeError):
        getattr(mod, "no_such_name")


def test_importing_the_packages_loads_neither_torch_nor_lava():
    code = ("import sys, qcfs2lava, netx_export; "
            "print(sorted(m for m in ('torch', 'lava', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_evaluate_saves_per_sample_outputs_that_reproduce_its_json(digits_model, tmp_path):
    from qcfs2lava.util.outputs import load_npz
    js, outs, spikes = tmp_path / "e.json", tmp_path / "o.npz", tmp_path / "s.npz"
    r = run_cli("evaluate", digits_model[0], "--T", "6", "--n", "50", "--json", js, "--save-outputs", outs,
                "--save-spikes", spikes)
    assert r.returncode == 0, r.stderr
    res, o, s = json.loads(js.read_text()), load_npz(str(outs)), load_npz(str(spikes))
    assert o["logits"].shape == (6, 50, 10) and o["predictions"].shape == (6, 50)
    assert sorted(o) == ["ann_logits", "indices", "labels", "logits", "predictions"]
    np.testing.assert_allclose((o["predictions"] == o["labels"][None]).mean(1), res["snn_accuracy"])
    assert (o["ann_logits"].argmax(1) == o["labels"]).mean() == pytest.approx(res["ann_accuracy"])
    names = list(s["layer_names"])
    assert names == list(res["firing_rates"])
    for i, name in enumerate(names):
        assert s[f"layer{i}"].shape == (6, 50) and (s[f"layer{i}"] >= 0).all()
        # spikes per step and sample add up to the firing rate the JSON reports (per neuron and step)
        assert s[f"layer{i}"].sum() > 0


def test_float_snn_step_spikes_add_up_to_the_totals(digits_model):
    import torch

    from qcfs2lava import convert, load_checkpoint, simulate, test_batches
    ck = load_checkpoint(digits_model[0])
    x, _ = test_batches(ck.meta, None, 20, 20)[0]
    r = simulate(convert(ck.model), x, 5, record_steps=True)
    for name, total in r.spikes.items():
        assert r.step_spikes[name].shape == (5, 20)
        torch.testing.assert_close(r.step_spikes[name].sum(0), total)
    assert not simulate(convert(ck.model), x, 5).step_spikes


def test_export_calibrate_is_a_deprecated_alias_of_bias_correction(digits_model, tmp_path):
    a = run_cli("export", digits_model[0], "-o", tmp_path / "a.net", "--bias-correction", "32")
    b = run_cli("export", digits_model[0], "-o", tmp_path / "b.net", "--calibrate", "32")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "--calibrate is deprecated; use --bias-correction" in b.stderr
    assert "deprecated" not in a.stderr
    from netx_export import read_netx
    na, nb = read_netx(str(tmp_path / "a.net")), read_netx(str(tmp_path / "b.net"))
    assert all(np.array_equal(x.bias, y.bias) for x, y in zip(na.synaptic, nb.synaptic))
    assert nb.metadata["calibration"]["images"] == 32


def test_require_lava_skips_only_outside_ci(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("lava") else real(name))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the Lava tests"):
        conftest.require_lava()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest.require_lava()
