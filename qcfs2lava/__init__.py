"""qcfs2lava: train QCFS ANNs in PyTorch and convert them to integrate-and-fire SNNs
(Bu et al., ICLR 2022), for Lava and Loihi 2 through ``netx_export``."""

__version__ = "0.1.0"
