"""`python -m lenet_lab` runs the `lenet-lab` command."""

import sys

from lenet_lab.cli import main

sys.exit(main())
