"""``python -m torchkfp.cli ...``, the same as ``torchkfp ...`` (the local scheduler starts its
runs this way)."""

from torchkfp.cli import main

if __name__ == "__main__":
    main()
