"""Untrained zoo networks for benchmarks whose numbers depend on shapes and spiking, not on accuracy:
random weights (``torch.manual_seed(0)``) and every QCFS λ = 1, a realistic spiking regime for random
weights. Imported by the benchmark scripts beside it (``python benchmarks/<script>.py``)."""
from __future__ import annotations

MAX_VALUE = {"digits": 16.0}            # pixel scale of the data set's raw values (default 255)


def untrained_model(arch: str, dataset: str = "cifar10", L: int = 4):
    """(QCFS model in eval mode, checkpoint-style metadata) for ``arch`` at ``dataset``'s shape."""
    import torch

    from qcfs2lava import data as D
    from qcfs2lava.models import build_model
    from qcfs2lava.qcfs import prepare_ann
    info = D.dataset_info(dataset)
    torch.manual_seed(0)
    model = prepare_ann(build_model(arch, info.num_classes, info.in_channels, info.input_size), L=L).eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "lam"):
                m.lam.fill_(1.0)
    meta = dict(dataset=dataset, arch=arch, input_shape=[info.in_channels, info.input_size, info.input_size],
                normalization=dict(mean=list(info.mean), std=list(info.std), max_value=MAX_VALUE.get(dataset, 255.0)))
    return model, meta


def export_untrained(arch: str, path: str, dataset: str = "cifar10") -> None:
    """Write ``arch`` untrained (as :func:`untrained_model`) as a NetX file."""
    from netx_export.convert.pipeline import convert_module
    from netx_export.netx.write import write_netx
    model, meta = untrained_model(arch, dataset)
    shape = tuple(meta.pop("input_shape"))
    write_netx(convert_module(model, shape, metadata=meta).net, path)
