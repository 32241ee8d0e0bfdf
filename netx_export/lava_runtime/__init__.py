"""Running NetX files on Lava: NetX registration, runner, residual shortcuts, stock-mode build, clean shutdown. Never imports netx_export.sim."""
