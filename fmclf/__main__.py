"""``python -m fmclf`` (and ``torchrun -m fmclf``) run the CLI."""

from .cli import main

if __name__ == "__main__":
    main()
