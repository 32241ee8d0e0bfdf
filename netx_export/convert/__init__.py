"""Convert a QCFS network to Loihi fixed point: trace → graph IR → folds → fixed point (→ bias correction); the stock-block mapping."""
