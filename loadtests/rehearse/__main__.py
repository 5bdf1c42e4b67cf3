"""`python -m loadtests.rehearse ...`: the same as `launchkit rehearse ...`."""

import sys

from loadtests.rehearse.cli import main

sys.exit(main())
