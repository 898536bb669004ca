"""C{python -m hubtwist}: the same entry point as the C{hubtwist} console script."""

from hubtwist.cli import main

main()
