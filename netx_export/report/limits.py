"""Loihi 2's resource limits for the resource plan (:mod:`netx_export.report.plan`): every figure the
planner uses, named once, with its source (``../shared/docs/loihi2-facts.md`` collects them).

Where Intel has not published a Loihi 2 figure the default is the Loihi 1 figure or our reading of the
public brief, and the field says so; each one is an option of ``qcfs2lava plan`` (``--neurons-per-core``,
``--synapse-kib``, ``--axons-in``, ``--synapse-bits``), so a user with the NDA figures can plan with
them. Numbers only, no imports beyond the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["Limits", "LOIHI2", "SOURCES", "ONE_CHIP", "KAPOHO_POINT_CHIPS"]

ONE_CHIP = 1                    # Oheo Gulch: one Loihi 2 chip
KAPOHO_POINT_CHIPS = 8          # Kapoho Point: 8 chips (Intel; fbhtechinfo Loihi 2 brief)


@dataclass(frozen=True)
class Limits:
    """Per-core and per-chip limits of one planning run (defaults: :data:`LOIHI2`)."""
    cores_per_chip: int = 128           # public
    neurons_per_core: int = 8192        # public maximum; what a given neuron model gets is not public
    synapse_bits_per_core: int = 128 * 1024 * 8     # "128 KB SRAM per core, flexibly partitioned"
    axons_in_per_core: int = 4096       # Loihi 1 figure; Loihi 2's is not public
    weight_bits: int = 8                # a synapse's weight mantissa (NetX weights are 8-bit)
    synapse_overhead_bits: int = 0      # per stored synapse beyond its weight (index bits); not public

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if (not isinstance(v, int) or isinstance(v, bool) or v < 0 or
                                           (v == 0 and f.name != "synapse_overhead_bits")):
                raise ValueError(f"limit {f.name} must be a positive integer, not {v!r}")


LOIHI2 = Limits()

SOURCES = {
    "cores_per_chip": "128 neuron cores per Loihi 2 chip (+ 6 x86 cores): open-neuromorphic.org Loihi 2 page; "
                      "nengo forum 'How many blocks per Loihi chip'",
    "neurons_per_core": "up to 8,192 neurons per core: WikiChip Loihi 2 (Loihi 1: 1,024, nengo-loihi validate.py); "
                        "the number a neuron model actually gets depends on its state size, not public",
    "synapse_bits_per_core": "128 KB of synaptic SRAM per core, flexibly partitioned: fbhtechinfo Loihi 2 brief "
                             "(Loihi 1: 16,384 x 64 bits, nengo-loihi MAX_SYNAPSE_BITS)",
    "axons_in_per_core": "4,096 input axons per core: the Loihi 1 figure (nengo-loihi; SpikingJelly issue #543); "
                         "Loihi 2's is not public",
    "weight_bits": "8-bit weight mantissas with a shared exponent: NetX / Loihi fixed point "
                   "(lava-netx-notes.md)",
    "synapse_overhead_bits": "bits a stored synapse needs beside its weight (index, format): not public for "
                             "Loihi 2; 0 is a lower bound",
    "chips": "Oheo Gulch: 1 chip; Kapoho Point: 8 chips (Intel; fbhtechinfo)",
}
