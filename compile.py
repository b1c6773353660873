"""Compile the pipelines for Vertex AI Pipelines and for the local runner.

    python compile.py [--vertex-config configs/vertex.example.yaml] [--out build]

Same as ``torchkfp compile``.
"""

import sys

from torchkfp.cli import main

if __name__ == "__main__":
    main(["compile", *sys.argv[1:]])
