"""The `refocus` command line: argparse on top, typed configs into the library."""
