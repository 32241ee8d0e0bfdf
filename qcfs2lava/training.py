"""Training recipe (paper, appendix A.1): SGD with momentum 0.9, cosine schedule, weight decay
5e-4 (CIFAR) / 1e-4 (ImageNet), lr 0.1 (0.02 for CIFAR-100), λ initialised at 8.

Deterministic on CPU for a given seed: each epoch draws its shuffling and augmentation from a
generator seeded by (seed, epoch), so ``resume`` from an end-of-epoch checkpoint reproduces an
uninterrupted run. Multi-process training uses PyTorch DDP: ``torchrun --nproc_per_node N -m
qcfs2lava train ...`` (gloo on CPU, NCCL on GPU).

Fine-tuning: ``init`` starts from a trained checkpoint's weights (same architecture, data set, L,
φ) instead of a fresh network; ``noise_p`` > 0 perturbs every QCFS output by ±λ/L with that
probability while training (:func:`qcfs2lava.qcfs.spike_noise`, the SNN's ±1-spike unevenness
error), e.g. a few epochs at a small lr to make a converted SNN more robust at low T. Resume and
DDP work as for any run: the noise is drawn from the same per-epoch seeded generator as dropout.

Spike-aware fine-tuning: ``snn_T`` > 0 adds ``snn_weight`` × the cross-entropy of the SNN's mean
output over ``snn_T`` steps, back-propagated through the IF twin of the network
(:mod:`qcfs2lava.surrogate`). The network then trains in eval mode (BatchNorm statistics and
dropout frozen, as deployed).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from qcfs2lava import data as D
from qcfs2lava import distributed
from qcfs2lava.checkpoint import load_checkpoint, save_checkpoint
from qcfs2lava.util.errors import UserError
from qcfs2lava.models import build_network
from qcfs2lava.models.factory import is_factory_spec
from qcfs2lava.util.progress import Progress
from qcfs2lava.qcfs import prepare_ann, qcfs_layers
from qcfs2lava.surrogate import SpikingTwin

# Per-dataset defaults: the paper's recipe, except the bundled digits (seconds on a CPU).
RECIPES: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, augment=False),
    "cifar10": dict(epochs=300, batch_size=128, lr=0.1, weight_decay=5e-4, augment=True),
    "cifar100": dict(epochs=300, batch_size=128, lr=0.02, weight_decay=5e-4, augment=True),
    "imagenet": dict(epochs=300, batch_size=256, lr=0.1, weight_decay=1e-4, augment=True),
}


@dataclass
class TrainConfig:
    arch: str = "tiny"                # a zoo name, or package.module:function (a marked factory of yours)
    model_kwargs: dict[str, Any] | None = None   # keyword arguments of that factory (JSON values)
    dataset: str = "digits"
    data_dir: str | None = None
    out: str = "model.pt"
    L: int = 4
    phi: float = 0.5
    activation: str = "qcfs"          # "qcfs" or "relu" (the threshold-balancing baselines)
    lam_init: float = 8.0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    label_smoothing: float = 0.0
    crop: bool = True
    flip: bool = True
    autoaugment: bool = True
    cutout: bool = True
    augment: bool | None = None       # None: the dataset's recipe
    seed: int = 0
    resume: bool = False
    log: str | None = None            # JSON lines, one per epoch
    max_steps: int | None = None      # stop early (smoke tests)
    stop_after: int | None = None     # stop after this many epochs, as if interrupted
    device: str = "cpu"
    threads: int | None = None
    workers: int = 4                  # DataLoader workers (folder data sets only)
    quiet: bool = False
    init: str | None = None           # start from this checkpoint's weights (fine-tuning)
    noise_p: float = 0.0              # QCFS ±λ/L output noise probability while training
    snn_T: int = 0                    # > 0: also train the IF twin's output at this many steps
    snn_weight: float = 1.0           # weight of that SNN loss
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        D.dataset_info(self.dataset)
        r = RECIPES[self.dataset]
        c = dataclasses.replace(self)
        for k in ("epochs", "batch_size", "lr", "weight_decay", "augment"):
            if getattr(c, k) is None:
                setattr(c, k, r[k])
        if c.activation not in ("qcfs", "relu"):
            raise UserError(f"activation must be 'qcfs' or 'relu', not '{c.activation}'")
        if c.L < 1 or c.epochs < 1 or c.batch_size < 1:
            raise UserError("L, epochs and batch size must be positive")
        if not 0.0 <= c.noise_p <= 1.0:
            raise UserError(f"noise probability must be in [0, 1], got {c.noise_p}")
        if c.noise_p > 0 and c.activation != "qcfs":
            raise UserError("spike noise (--noise-p) needs QCFS activations")
        if c.snn_T < 0 or not (math.isfinite(c.snn_weight) and c.snn_weight >= 0):
            raise UserError("--snn-T and --snn-weight must be >= 0")
        if c.snn_T > 0 and c.activation != "qcfs":
            raise UserError("spike-aware fine-tuning (--snn-T) needs QCFS activations")
        if c.snn_T > 0 and c.noise_p > 0:
            # the twin trains in eval mode, where QCFS draws no noise: refuse rather than ignore --noise-p
            raise UserError("--noise-p and --snn-T cannot be combined (spike-aware fine-tuning runs in eval mode)")
        return c


def _average_buffers(model: nn.Module, world: int) -> None:
    """DDP all-reduces gradients, so parameters agree; BatchNorm statistics are per rank.
    Average them at each epoch's end so that every rank holds the same model."""
    for b in model.buffers():
        if b.is_floating_point():
            torch.distributed.all_reduce(b)
            b /= world


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights and on λ (keeps thresholds tight); none on BN/bias."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if (p.ndim == 1 or name.endswith(".bias")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def accuracy(model: nn.Module, split, info: D.DatasetInfo, batch_size: int = 500, device: str = "cpu") -> float:
    model.eval()
    correct = n = 0
    for x, y in D.batches(split, batch_size, info):
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        n += len(y)
    return correct / max(n, 1)


def load_init(cfg: TrainConfig, model: nn.Module) -> dict[str, Any]:
    """Load ``cfg.init``'s weights into ``model`` (built from ``cfg``); its identity for the metadata.
    The checkpoint must describe the same network: architecture, data set, activation, L and φ."""
    assert cfg.init is not None
    ck = load_checkpoint(cfg.init)
    want = dict(arch=cfg.arch, dataset=cfg.dataset, activation=cfg.activation, L=cfg.L,
                phi=cfg.phi if cfg.activation == "qcfs" else 0.0)
    diff = [f"{k} {ck.meta.get(k)!r} (not {v!r})" for k, v in want.items() if ck.meta.get(k) != v]
    if diff:
        raise UserError(f"--init {cfg.init} is a different network: " + ", ".join(diff))
    model.load_state_dict(ck.model.state_dict())
    return dict(path=os.path.basename(cfg.init), sha256=ck.sha256, metrics=ck.meta.get("metrics"))


def _process_device(device: str, world: int) -> str:
    """Under torchrun every process takes its own GPU (``cuda:LOCAL_RANK``); a plain ``cuda`` would
    put all of them on GPU 0, which NCCL refuses."""
    if device == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


# What defines a run: a resumed run must ask for exactly these again (the rest — data folder, device,
# threads, logging, when to stop — may change between work periods).
RUN_DEFINING = ("arch", "model_kwargs", "dataset", "L", "phi", "activation", "lam_init", "epochs", "batch_size", "lr", "momentum",
                "weight_decay", "label_smoothing", "crop", "flip", "autoaugment", "cutout", "augment", "seed",
                "init", "noise_p", "snn_T", "snn_weight")


@dataclass
class _Run:
    """Everything one training run holds between epochs."""
    cfg: TrainConfig
    rank: int
    world: int
    device: str
    info: D.DatasetInfo
    train_split: Any
    test_split: Any
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    steps_per_epoch: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    meta_base: dict[str, Any] = field(default_factory=dict)
    step: int = 0


def _build(cfg: TrainConfig) -> _Run:
    rank, world = distributed.init()
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is the global batch: it must divide evenly among "
                        f"{world} processes")
    device = _process_device(cfg.device, world)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = D.dataset_info(cfg.dataset)
    train_split = D.load_split(cfg.dataset, cfg.data_dir, train=True)
    test_split = D.load_split(cfg.dataset, cfg.data_dir, train=False)
    torch.manual_seed(cfg.seed)
    model = build_network(cfg.arch, dict(num_classes=info.num_classes, in_channels=info.in_channels,
                                          input_size=info.input_size), cfg.model_kwargs)
    prepare_ann(model, L=cfg.L, lam_init=cfg.lam_init, phi=cfg.phi, keep_relu=cfg.activation == "relu")
    init_meta = load_init(cfg, model) if cfg.init else None
    for _, q in qcfs_layers(model):
        q.noise_p = float(cfg.noise_p)
    model.to(device)
    opt = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    steps_per_epoch = (len(train_split) // world) // (cfg.batch_size // world)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    run = _Run(cfg, rank, world, device, info, train_split, test_split, model, opt, sched, steps_per_epoch)
    run.meta_base = _meta_base(cfg, info, train_split, init_meta)
    return run


def _meta_base(cfg: TrainConfig, info: D.DatasetInfo, train_split, init_meta: dict[str, Any] | None
               ) -> dict[str, Any]:
    meta = dict(arch=cfg.arch, arch_kwargs=dict(num_classes=info.num_classes, in_channels=info.in_channels,
                                                input_size=info.input_size),
                **({"model_kwargs": dict(cfg.model_kwargs or {})} if is_factory_spec(cfg.arch) else {}),
                activation=cfg.activation, L=cfg.L, phi=cfg.phi if cfg.activation == "qcfs" else 0.0,
                dataset=cfg.dataset, input_shape=[info.in_channels, info.input_size, info.input_size],
                normalization=dict(mean=list(info.mean), std=list(info.std),
                                   max_value=float(getattr(train_split, "max_value", 255.0))),
                class_names=list(getattr(train_split, "class_names", None) or train_split.classes),
                train_config={k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"})
    if init_meta is not None:
        meta["init"] = init_meta
    if cfg.noise_p > 0:
        meta["spike_noise"] = dict(p=cfg.noise_p, step="lambda/L", model="qcfs2lava.qcfs.spike_noise")
    if cfg.snn_T > 0:
        meta["spike_finetune"] = dict(T=cfg.snn_T, weight=cfg.snn_weight, surrogate="triangle",
                                      model="qcfs2lava.surrogate.SpikingTwin")
    return meta


def _resume(run: _Run) -> None:
    """Continue from ``cfg.out``'s end-of-epoch state; refuse a run that asks for other settings."""
    cfg = run.cfg
    ck = load_checkpoint(cfg.out)
    if ck.training_state is None:
        raise UserError(f"{cfg.out} is a finished checkpoint; nothing to resume")
    was = ck.meta.get("train_config") or {}
    changed = [f"{k} {was.get(k)!r} → {getattr(cfg, k)!r}" for k in RUN_DEFINING
               if k in was and was[k] != getattr(cfg, k)]
    if changed:
        raise UserError(f"--resume {cfg.out}: this run asks for other settings than the one it continues "
                        f"({', '.join(changed)}); resume with the same settings, or write a new --out")
    run.model.load_state_dict(ck.model.state_dict())
    run.opt.load_state_dict(ck.training_state["optimizer"])
    run.sched.load_state_dict(ck.training_state["scheduler"])
    run.start_epoch = int(ck.training_state["epoch"])
    run.history = list(ck.meta.get("history", []))


def _loss(cfg: TrainConfig, out, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, the logits whose accuracy is shown): with spike-aware fine-tuning, ANN + w · SNN loss."""
    if cfg.snn_T > 0:
        ann_out, out = out
        return (F.cross_entropy(ann_out, y, label_smoothing=cfg.label_smoothing)
                + cfg.snn_weight * F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)), out
    return F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing), out


def _train_epoch(run: _Run, net: nn.Module, epoch: int, augment) -> dict[str, float]:
    cfg, world = run.cfg, run.world
    net.train(cfg.snn_T == 0)
    torch.manual_seed(cfg.seed * 100003 + epoch)           # dropout
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    bar = Progress(run.steps_per_epoch * cfg.batch_size, f"epoch {epoch + 1}/{cfg.epochs}", "img",
                   enabled=run.rank == 0 and not cfg.quiet)
    t0 = time.perf_counter()
    tot_loss = tot_correct = tot_n = 0.0
    for x, y in D.batches(run.train_split, cfg.batch_size // world, run.info, shuffle=True, generator=g,
                          augment=augment, rank=run.rank, world=world, drop_last=True, workers=cfg.workers):
        x, y = x.to(run.device), y.to(run.device)
        loss, out = _loss(cfg, net(x), y)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        if not math.isfinite(loss.item()):
            raise UserError(f"training diverged (loss {float(loss)}) at epoch {epoch + 1}; lower --lr")
        tot_loss += loss.item() * len(y)
        tot_correct += float((out.argmax(1) == y).sum())
        tot_n += len(y)
        bar.update(len(y) * world, loss=tot_loss / tot_n, acc=tot_correct / tot_n)
        run.step += 1
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
    bar.close()
    if world > 1:
        _average_buffers(run.model, world)
    test_acc = float("nan")
    if run.rank == 0:
        test_acc = accuracy(run.model, run.test_split, run.info, batch_size=cfg.batch_size, device=run.device)
    dt = time.perf_counter() - t0
    return dict(epoch=epoch + 1, train_loss=tot_loss / max(tot_n, 1), train_accuracy=tot_correct / max(tot_n, 1),
                test_accuracy=test_acc, lr=run.opt.param_groups[0]["lr"], seconds=dt,
                images_per_second=tot_n * world / max(dt, 1e-9))


def _end_epoch(run: _Run, metrics: dict[str, Any], finished: bool) -> None:
    """Rank 0: print, log, and write the checkpoint (with the training state unless finished)."""
    cfg = run.cfg
    if run.rank != 0:
        return
    if not cfg.quiet:
        print(f"epoch {metrics['epoch']}/{cfg.epochs}: loss {metrics['train_loss']:.4f} "
              f"train {100 * metrics['train_accuracy']:.2f}% test {100 * metrics['test_accuracy']:.2f}% "
              f"({metrics['images_per_second']:.0f} img/s)", flush=True)
    if cfg.log:
        with open(cfg.log, "a") as f:
            f.write(json.dumps(metrics) + "\n")
    state = None if finished else dict(optimizer=run.opt.state_dict(), scheduler=run.sched.state_dict(),
                                       epoch=metrics["epoch"])
    save_checkpoint(cfg.out, run.model, dict(run.meta_base, history=run.history, metrics=metrics), state)


def _close_ddp(run: _Run, metrics: dict[str, Any]) -> None:
    metrics["ddp_world_size"] = run.world
    dump = os.environ.get("QCFS2LAVA_RANK_DUMP")
    if dump:
        torch.save({k: v.detach().cpu() for k, v in run.model.state_dict().items()},
                   os.path.join(dump, f"rank{run.rank}.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train and write ``cfg.out`` (every epoch, atomically; ``cfg.resume`` continues it); returns the
    final metrics."""
    cfg = cfg.resolved()
    run = _build(cfg)
    if cfg.resume and os.path.exists(cfg.out):
        _resume(run)
    net: nn.Module = SpikingTwin(run.model, cfg.snn_T) if cfg.snn_T > 0 else run.model
    if run.world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    augment = D.Augment(crop=4 if cfg.crop else 0, flip=cfg.flip, autoaugment=cfg.autoaugment,
                        cutout=16 if cfg.cutout else 0) if cfg.augment else None
    metrics: dict[str, Any] = {}
    for epoch in range(run.start_epoch, cfg.epochs):
        metrics = _train_epoch(run, net, epoch, augment)
        run.history.append(metrics)
        finished = epoch + 1 == cfg.epochs or bool(cfg.max_steps and run.step >= cfg.max_steps)
        _end_epoch(run, metrics, finished)
        if finished or (cfg.stop_after and epoch + 1 - run.start_epoch >= cfg.stop_after):
            break
    if run.world > 1:
        _close_ddp(run, metrics)
    return metrics
