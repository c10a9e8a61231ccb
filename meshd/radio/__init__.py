"""meshd.radio layer (see DESIGN.md section 3)."""
