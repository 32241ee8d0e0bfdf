"""``qcfs2lava import``: a checkpoint of the QCFS authors' code as our self-describing checkpoint
(:mod:`qcfs2lava.official_import`)."""
from __future__ import annotations

import argparse

from qcfs2lava.cli.common import RAW, integer, write_json

__all__ = ["register", "cmd_import"]

EPILOG_IMPORT = """examples:
  qcfs2lava import vgg16_L4.pth --from qcfs-official --arch vgg16 --dataset cifar10 --L 4 -o vgg16.pt
  qcfs2lava import r34.pth --from qcfs-official --arch resnet34 --dataset imagenet --L 16 -o r34.pt
  qcfs2lava evaluate vgg16.pt --data-dir D --T 8     # then export, simulate, report as usual

The layout (new code putshua/ANN_SNN_QCFS with IF.thresh, old code putshua/SNN_conversion_QCFS with
MyFloor.up, with or without DistributedDataParallel's 'module.' prefix) is recognised from the keys.
The file is read with weights_only=True; no code of the authors is needed.
"""


def cmd_import(a: argparse.Namespace) -> int:
    from qcfs2lava.official_import import LAYOUTS, import_official, save_imported
    from qcfs2lava.qcfs import qcfs_layers
    from qcfs2lava.util.fileio import check_outputs
    check_outputs([("-o", a.output), ("--json", a.json)], [a.file])
    imp = import_official(a.file, a.arch, a.dataset, a.L)
    save_imported(imp, a.output)
    src = imp.meta["imported_from"]
    lam = [float(m.lam.detach()) for _, m in qcfs_layers(imp.model)]
    print(f"{a.file}: {LAYOUTS[imp.layout][0]} layout ({imp.layout}{', module. prefix removed' if src['module_prefix_removed'] else ''}), "
          f"{a.arch} on {a.dataset}, L = {a.L}: {len(lam)} QCFS layers, λ from {min(lam):.4g} to {max(lam):.4g}")
    print(f"wrote {a.output} (architecture {imp.meta['arch']}, source sha256 {src['sha256'][:12]}…)")
    write_json(a.json, dict(file=a.file, output=a.output, arch=imp.meta["arch"], dataset=a.dataset, L=a.L,
                            imported_from=src, lam=lam))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import", help="import a checkpoint of the QCFS authors' code (state dict .pth)",
                       epilog=EPILOG_IMPORT, formatter_class=RAW)
    i.add_argument("file", help="PATH.pth saved by torch.save(model.state_dict()) in the authors' code")
    i.add_argument("--from", dest="source", choices=["qcfs-official"], required=True,
                   help="where the checkpoint comes from: qcfs-official (Bu et al.'s code, both versions)")
    # (checked by qcfs2lava.official_import, so that building the parser needs no torch)
    i.add_argument("--arch", required=True, help="their architecture: vgg16, resnet18, resnet20 or resnet34")
    i.add_argument("--dataset", required=True, help="what it was trained on: cifar10, cifar100 or imagenet")
    i.add_argument("--L", type=integer(1, 1 << 16), required=True,
                   help="quantization steps L the network was trained with (not stored in their files)")
    i.add_argument("-o", "--output", required=True, help="our checkpoint to write (model.pt)")
    i.add_argument("--json", help="also write what was imported as JSON")
    i.set_defaults(func=cmd_import)
