"""autoshrink.scripts: the ``autoshrink`` command line, one module per subcommand."""
