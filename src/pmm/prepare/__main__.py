import sys

from pmm.prepare.cli import main

sys.exit(main())
