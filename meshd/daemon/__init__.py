"""meshd.daemon layer (see DESIGN.md section 3)."""
