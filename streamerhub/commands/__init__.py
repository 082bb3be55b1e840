"""The `streamerhub` command line: one module per group of subcommands."""
