"""The installation's database: its contract schema, connections, and the night's queries."""
