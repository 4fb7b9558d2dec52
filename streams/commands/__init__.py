"""The subcommands of the `cdrstream` CLI, one module per job."""
