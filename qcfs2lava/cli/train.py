"""``qcfs2lava train``: train a QCFS (or ReLU) ANN with the paper's recipe (:mod:`qcfs2lava.training`)."""
from __future__ import annotations

import argparse
import os

from qcfs2lava.cli.common import RAW, bool_flag, integer, number, write_json

__all__ = ["register", "cmd_train"]

EPILOG_TRAIN = """examples:
  qcfs2lava train --arch tiny --dataset digits --epochs 30 --out m.pt
  qcfs2lava train --model mypkg.nets:make --model-kwargs '{"width": 32}' --dataset digits --out mine.pt
  qcfs2lava train --arch vgg16 --dataset cifar10 --data-dir D --L 4 --epochs 300 --out vgg16.pt
  torchrun --nproc_per_node 2 -m qcfs2lava train --arch resnet20 --dataset cifar10 --data-dir D --out r20.pt
  qcfs2lava train --arch vgg-small --dataset cifar10 --data-dir D --init m.pt --noise-p 0.1 --epochs 3 \
      --lr 0.005 --out m_noise.pt                     # noise-injected fine-tuning (±1 spike)
  qcfs2lava train --arch vgg-small --dataset cifar10 --data-dir D --init m.pt --snn-T 2 --epochs 2 \
      --lr 0.005 --out m_snn2.pt                      # spike-aware fine-tuning through the IF twin at T=2
"""

def cmd_train(a: argparse.Namespace) -> int:
    from qcfs2lava.models.factory import is_factory_spec, parse_kwargs
    from qcfs2lava.training import TrainConfig, train
    from qcfs2lava.util.errors import UserError
    from qcfs2lava.util.fileio import check_outputs
    if a.model and a.arch:
        raise UserError("--arch names a zoo network and --model your own factory; give one of them")
    if a.model is not None and not is_factory_spec(a.model):
        raise UserError(f"--model {a.model!r}: expected package.module:function")
    if a.model_kwargs and not a.model:
        raise UserError("--model-kwargs are the keyword arguments of --model package.module:function; give that too")
    check_outputs([("--out", a.out), ("--json", a.json), ("--log", a.log)], [a.init])
    model_kwargs = parse_kwargs(a.model_kwargs) if a.model else None
    cfg = TrainConfig(arch=a.model or a.arch or "tiny", model_kwargs=model_kwargs, dataset=a.dataset, data_dir=a.data_dir, out=a.out, L=a.L, phi=a.phi,
                      activation=a.activation, lam_init=a.lam_init, epochs=a.epochs, batch_size=a.batch_size,
                      lr=a.lr, weight_decay=a.weight_decay, label_smoothing=a.label_smoothing, crop=a.crop,
                      flip=a.flip, autoaugment=a.autoaugment, cutout=a.cutout, augment=a.augment, seed=a.seed,
                      resume=a.resume, log=a.log, max_steps=a.max_steps, stop_after=a.stop_after,
                      device=a.device, threads=a.threads, workers=a.workers, init=a.init, noise_p=a.noise_p,
                      snn_T=a.snn_T, snn_weight=a.snn_weight)
    metrics = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {a.out}: test accuracy {100 * metrics.get('test_accuracy', float('nan')):.2f}%")
        write_json(a.json, metrics)
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a QCFS (or ReLU) ANN", epilog=EPILOG_TRAIN,
                       formatter_class=RAW)
    t.add_argument("--arch", help="tiny (default), vgg-small, vgg16, resnet18, resnet20, resnet34; the QCFS authors' "
                   "layouts official-vgg16, official-resnet18, official-resnet20, official-resnet34")
    t.add_argument("--model", metavar="PKG.MODULE:FUNCTION",
                   help="your own network instead of --arch: a factory in your installed code, marked with "
                        "@qcfs2lava.model_factory, returning a ReLU or QCFS nn.Module (docs/your-network.md)")
    t.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments of the --model factory, a JSON object")
    t.add_argument("--dataset", default="digits", help="digits (bundled), cifar10, cifar100, imagenet")
    t.add_argument("--data-dir", help="folder with the data set's standard layout")
    t.add_argument("--out", default="model.pt", help="checkpoint to write (atomically, every epoch)")
    t.add_argument("--L", type=integer(1, 1024), default=4, help="quantization steps L (default 4)")
    t.add_argument("--phi", type=number(0.0, 1.0), default=0.5, help="shift φ (0.5; 0 = QCF ablation)")
    t.add_argument("--activation", default="qcfs", choices=["qcfs", "relu"])
    t.add_argument("--lam-init", type=number(above=0.0), default=8.0, help="initial threshold λ (default 8)")
    t.add_argument("--epochs", type=integer(1), help="default: the data set's recipe (300 for CIFAR, 30 for digits)")
    t.add_argument("--batch-size", type=integer(1), help="global batch size (default: the recipe's)")
    t.add_argument("--lr", type=number(above=0.0), help="initial learning rate (default: the recipe's)")
    t.add_argument("--weight-decay", type=number(0.0), help="default 5e-4 (CIFAR, digits), 1e-4 (ImageNet)")
    t.add_argument("--label-smoothing", type=number(0.0, 1.0), default=0.0)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="data augmentation on/off (default: the data set's recipe)")
    bool_flag(t, "crop", "random crop with 4-px padding")
    bool_flag(t, "flip", "random horizontal flip")
    bool_flag(t, "autoaugment", "AutoAugment (CIFAR-10 policy)")
    bool_flag(t, "cutout", "Cutout 16 px")
    t.add_argument("--seed", type=integer(0), default=0)
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from --out")
    t.add_argument("--log", help="append per-epoch metrics as JSON lines")
    t.add_argument("--json", help="write final metrics as JSON")
    t.add_argument("--max-steps", type=integer(1), help="stop after this many optimizer steps (smoke tests)")
    t.add_argument("--stop-after", type=integer(1), help="stop after this many epochs, resumable")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=integer(1, 1024))
    t.add_argument("--workers", type=integer(0, 256), default=4, help="data loader workers (ImageNet)")
    t.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights (same arch, L, φ)")
    t.add_argument("--noise-p", type=number(0.0, 1.0), default=0.0, metavar="P",
                   help="QCFS output noise: ±λ/L (one spike at T=L) with probability P while training (default 0)")
    t.add_argument("--snn-T", type=integer(0, 1024), default=0, metavar="T",
                   help="spike-aware fine-tuning: also train the IF twin's mean output over T steps "
                        "(surrogate gradient; BatchNorm and dropout frozen; default 0 = off)")
    t.add_argument("--snn-weight", type=number(0.0), default=1.0, metavar="W",
                   help="weight of the SNN loss next to the ANN loss (default 1)")
    t.set_defaults(func=cmd_train)
