"""`python -m streamerhub` is the same as the `streamerhub` command."""

import sys

from streamerhub.commands.main import main

sys.exit(main())
