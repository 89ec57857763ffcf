"""The ``ltr`` command line (Typer). Heavy libraries are imported inside commands."""
