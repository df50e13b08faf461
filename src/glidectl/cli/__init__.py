"""The ``glidectl`` command line: thin Typer modules over the library."""
