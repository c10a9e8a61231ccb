"""meshd.hq layer (see DESIGN.md section 3)."""
