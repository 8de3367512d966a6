"""The thin Typer layer: parse options, call the library, render. No logic lives here."""
