import sys

from udacisense.cli import main

sys.exit(main())
