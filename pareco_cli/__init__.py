"""The ``pareco`` command line (typer + rich); heavy packages are imported inside commands."""
