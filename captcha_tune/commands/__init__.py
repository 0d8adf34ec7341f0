"""One module per verb: argument parsing and one call into the library."""
