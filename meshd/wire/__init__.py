"""meshd.wire layer (see DESIGN.md section 3)."""
