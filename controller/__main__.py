"""``python -m controller`` runs the ``sluice`` command."""

from controller.cli.app import main

main()
