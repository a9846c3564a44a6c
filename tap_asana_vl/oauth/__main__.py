"""Allow ``python -m tap_asana_vl.oauth`` (same as ``tap-asana-vl-auth``)."""

import sys

from tap_asana_vl.oauth.cli import main

sys.exit(main())
