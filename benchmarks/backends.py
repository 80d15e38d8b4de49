"""`python -m benchmarks.backends`: the backend benchmark, kept under its recorded name.

The code ships in the package (bench/backends.py, also `refocus bench`) because the CLI
verb needs it in an installed wheel; this entry point keeps the commands recorded in
benchmarks/results reproducible from a checkout.
"""
import sys

from refocus_edge.bench.backends import main

if __name__ == "__main__":
    sys.exit(main())
