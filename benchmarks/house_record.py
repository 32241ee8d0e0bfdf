"""Fingerprint of what the toolchain computes, for the house restructuring (issue 14).

For each checkpoint: export it (default bias correction), then hash
  * the NetX file: every HDF5 dataset's bytes (and the file's own bytes),
  * the reference simulator's logits and spikes of every layer, aligned and Lava timing,
  * Lava's spikes and logits (CPU simulator, fixed_pt, fast conv) on the first ``--lava-n`` images,
and write one JSON. Run it before and after a restructuring; the two JSONs must be equal
(``--compare OLD.json`` exits 1 if any fingerprint differs).

    python benchmarks/house_record.py --model /tmp/rec/tiny.pt --model /tmp/rec/vgg_small.pt \
        --data-dir /tmp/cifar --n 200 --lava-n 20 --T 8 --out benchmarks/results/house_record_after.json \
        --compare benchmarks/results/house_record_before.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

from netx_export.convert.fixedpoint import input_drive
from netx_export.lava_runtime.runner import run_lava
from netx_export.netx.inputs import load_test_inputs
from netx_export.netx.read import read_netx
from netx_export.sim.refsim import simulate_drive


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        if a.dtype.kind in "OSU":           # strings: by value (an object array's bytes are pointers)
            h.update(repr([v.decode() if isinstance(v, bytes) else v for v in a.ravel().tolist()]).encode())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _file_datasets(path: str) -> dict[str, str]:
    out: dict[str, str] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = _sha(np.asarray(obj[()]))
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def record(model: str, data_dir: str | None, n: int, lava_n: int, T: int, work: str) -> dict:
    net_path = os.path.join(work, os.path.splitext(os.path.basename(model))[0] + ".net")
    cmd = [sys.executable, "-m", "qcfs2lava", "export", model, "-o", net_path]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    net = read_netx(net_path)
    xs, ys, _ = load_test_inputs(net, net_path, None, data_dir, n)
    drive = input_drive(net, xs).drive
    rec: dict = dict(model=os.path.basename(model), n=len(ys), T=T, datasets=_file_datasets(net_path),
                     file_sha256=hashlib.sha256(open(net_path, "rb").read()).hexdigest())
    for timing in ("aligned", "lava"):
        ref = simulate_drive(net, drive, T, timing, record_spikes=True)
        rec[f"refsim_{timing}"] = dict(logits=_sha(ref.logits), spikes=[_sha(s) for s in ref.spikes],
                                       accuracy=[float(v) for v in ref.accuracy(ys)])
    if lava_n:
        lav = run_lava(net_path, T=T, drive=drive[:lava_n], timing="aligned", record_spikes=True, qnet=net)
        ref = simulate_drive(net, drive[:lava_n], T, "aligned", record_spikes=True)
        rec["lava_aligned"] = dict(n=lav.n, logits=_sha(lav.logits),
                                   spikes=[_sha(s) for s in lav.spikes],
                                   equals_refsim=all(np.array_equal(a, b[:, :lav.n])
                                                     for a, b in zip(lav.spikes, ref.spikes)))
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--lava-n", type=int, default=20)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--out", required=True)
    p.add_argument("--compare", help="an earlier record: exit 1 unless every fingerprint is equal")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = [record(m, a.data_dir, a.n, a.lava_n, a.T, work) for m in a.model]
    out = dict(command=" ".join(["python"] + sys.argv), git=subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(), records=rows)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.out}")
    if a.compare:
        old = json.load(open(a.compare))["records"]
        same = [o == r for o, r in zip(old, rows)] + [len(old) == len(rows)]
        for o, r in zip(old, rows):
            diff = sorted(k for k in set(o) | set(r) if o.get(k) != r.get(k))
            print(f"{r['model']}: {'identical' if not diff else 'DIFFERENT in ' + ', '.join(diff)}")
        return 0 if all(same) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
