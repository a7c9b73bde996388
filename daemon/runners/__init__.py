"""The runners: processes that move mail (intake, backfill, clocks, delivery); App wires them."""
