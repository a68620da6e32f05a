"""Hardware-in-the-loop testing: the pytest plugin (fixtures spu_daemon, spu_device; marker spu_config)."""
