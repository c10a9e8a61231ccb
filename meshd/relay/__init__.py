"""meshd.relay layer (see DESIGN.md section 3)."""
