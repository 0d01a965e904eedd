"""`mfd ...`: the command line, one module per subcommand; only the command being run is imported."""
