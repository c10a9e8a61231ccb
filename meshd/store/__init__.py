"""meshd.store layer (see DESIGN.md section 3)."""
