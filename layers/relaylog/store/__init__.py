"""Reading records back: DuckDB over the local data dir."""
