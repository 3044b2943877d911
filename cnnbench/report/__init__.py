"""Reports: tables (pandas), figures (matplotlib) and rendering, from saved records only."""
