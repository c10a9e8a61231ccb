"""meshd.uplink layer (see DESIGN.md section 3)."""
