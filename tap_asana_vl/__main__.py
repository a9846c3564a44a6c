"""Allow `python -m tap_asana_vl`."""

from tap_asana_vl.tap import main

main()
