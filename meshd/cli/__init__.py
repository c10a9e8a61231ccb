"""meshd.cli layer (see DESIGN.md section 3)."""
