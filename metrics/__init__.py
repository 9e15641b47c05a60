"""The bundled example project's definitions, shipped as package data for `tally demo`."""
