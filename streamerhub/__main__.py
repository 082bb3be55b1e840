"""`python -m streamerhub` is the same as the `streamerhub` command."""

import sys

from streamerhub.cli import main

sys.exit(main())
