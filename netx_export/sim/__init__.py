"""The integer-exact simulators of a NetX file (numpy): IF_SUB reference and stock-block mode. Independent of Lava."""
