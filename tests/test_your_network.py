"""Your own network (issue 15, part 2): ``train --model package.module:function`` with a factory
of the user's code, rebuilt by every later command from the checkpoint's import path and JSON
keyword arguments (never pickled code), and through to Lava bit-exact."""
from __future__ import annotations

import json
import os

import pytest
import torch

from qcfs2lava.cli import main
from qcfs2lava.util.errors import UserError

FACTORY = "user_models:five_layer_cnn"


def _fails(capsys, argv, pattern):
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and pattern in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "mine.pt"
    assert main(["train", "--model", FACTORY, "--model-kwargs", json.dumps({"width": 8, "hidden": 32}),
                 "--dataset", "digits", "--epochs", "5", "--L", "4", "--lam-init", "4", "--out", str(path)]) == 0
    return str(path)


def test_the_checkpoint_names_the_factory_not_its_code(user_model):
    raw = torch.load(user_model, weights_only=True)
    assert raw["meta"]["arch"] == FACTORY and raw["meta"]["model_kwargs"] == {"width": 8, "hidden": 32}
    from qcfs2lava.checkpoint import load_checkpoint
    ck = load_checkpoint(user_model)
    convs = [m for m in ck.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1), (3, 3)] and convs[2].stride == (2, 2)
    assert ck.meta["metrics"]["test_accuracy"] > 0.5          # it learned (5 epochs on digits)


def test_train_export_refsim_lava_bit_exact(user_model, tmp_path, capsys):
    from conftest import require_lava
    net = str(tmp_path / "mine.net")
    assert main(["evaluate", user_model, "--T", "4", "--n", "40"]) == 0
    assert main(["export", user_model, "-o", net]) == 0
    assert main(["simulate", net, "--T", "4", "--n", "40", "--json", str(tmp_path / "ref.json")]) == 0
    require_lava()
    out = tmp_path / "lava.json"
    assert main(["simulate", net, "--backend", "lava", "--compare", "--T", "4", "--n", "3", "--json", str(out)]) == 0
    c = json.loads(out.read_text())["compare"]
    assert c["spike_mismatches"] == 0 and c["spikes_compared"] > 0 and c["bit_exact"], c


def test_the_same_network_through_the_python_api(tmp_path):
    """export of a QCFS nn.Module of any shape the graph supports, straight from Python."""
    import netx_export
    import qcfs2lava
    from user_models import five_layer_cnn
    model = qcfs2lava.prepare_ann(five_layer_cnn(width=4, hidden=16), L=4).eval()
    path = str(tmp_path / "api.net")
    net = netx_export.export(model, path, input_shape=(1, 8, 8), dataset="digits").net
    assert [lay.kind for lay in net.synaptic] == ["conv"] * 3 + ["dense"] * 3
    assert netx_export.validate_file(path) == []


def test_an_unsupported_module_is_named(tmp_path):
    import netx_export
    import qcfs2lava
    from netx_export.errors import ExportError
    from user_models import five_layer_cnn
    model = qcfs2lava.prepare_ann(five_layer_cnn(width=4), L=4)
    model[3] = torch.nn.MaxPool2d(1)                      # put back what prepare_ann would have replaced
    with pytest.raises(ExportError, match=r"'3' \(MaxPool2d\)"):
        netx_export.export(model.eval(), str(tmp_path / "x.net"), input_shape=(1, 8, 8))
    assert not os.path.exists(tmp_path / "x.net")


def test_factories_that_cannot_be_used_are_one_line(capsys, tmp_path):
    out = tmp_path / "m.pt"
    base = ["train", "--dataset", "digits", "--epochs", "1", "--out", out]
    _fails(capsys, base + ["--model", "no_such_pkg.nets:make"], "cannot import no_such_pkg.nets")
    _fails(capsys, base + ["--model", "user_models:nothing"], "user_models has no 'nothing'")
    _fails(capsys, base + ["--model", "user_models:unmarked"], "is not marked as one; decorate it with @qcfs2lava.model_factory")
    _fails(capsys, base + ["--model", "os:system", "--model-kwargs", '{"command": "touch PWNED"}'], "is not marked")
    _fails(capsys, base + ["--model", "user_models:not_a_module"], "returned a str, not a torch.nn.Module")
    _fails(capsys, base + ["--model", FACTORY, "--model-kwargs", '{"widht": 8}'], "unexpected keyword argument 'widht'")
    _fails(capsys, base + ["--model", FACTORY, "--model-kwargs", "{width: 8}"], "--model-kwargs is not JSON")
    _fails(capsys, base + ["--model", FACTORY, "--model-kwargs", "[8]"], "must be a JSON object, got list")
    _fails(capsys, base + ["--model", FACTORY, "--model-kwargs", '{"classes": 5}'], "the data set needs (1, 10)")
    _fails(capsys, base + ["--model", FACTORY, "--model-kwargs", '{"in_channels": 3}'], "fails on an input of shape (1, 8, 8)")
    _fails(capsys, base + ["--model", "user_models:with_gelu"], "is GELU; only ReLU can be converted")
    _fails(capsys, base + ["--model", "not a spec"], "expected package.module:function")
    _fails(capsys, base + ["--model", FACTORY, "--arch", "tiny"], "give one of them")
    _fails(capsys, base + ["--model-kwargs", "{}"], "give that too")
    assert not out.exists() and not os.path.exists("PWNED")


def test_a_checkpoint_cannot_make_us_call_anything_else(tmp_path, user_model):
    """A crafted checkpoint naming os:system (or an unmarked function) is refused before any call,
    by every command that loads it."""
    from qcfs2lava.checkpoint import load_checkpoint
    raw = torch.load(user_model, weights_only=True)
    for spec, kwargs in [("os:system", {"command": f"touch {tmp_path}/PWNED"}), ("user_models:unmarked", {})]:
        raw["meta"]["arch"], raw["meta"]["model_kwargs"] = spec, kwargs
        torch.save(raw, tmp_path / "evil.pt")
        with pytest.raises(UserError, match="is not marked as one"):
            load_checkpoint(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "PWNED").exists()


def test_a_state_dict_of_another_shape_is_refused(tmp_path, user_model):
    from qcfs2lava.checkpoint import load_checkpoint
    raw = torch.load(user_model, weights_only=True)
    raw["meta"]["model_kwargs"] = {"width": 16, "hidden": 32}
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(UserError, match="weights do not match architecture 'user_models:five_layer_cnn'"):
        load_checkpoint(str(tmp_path / "other.pt"))
