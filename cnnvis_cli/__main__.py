"""Entry point for ``python -m cnnvis_cli``."""

from cnnvis_cli.cli import main

if __name__ == "__main__":
    main()
