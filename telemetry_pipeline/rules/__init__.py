"""Business rules as plain functions: who is free, whose email goes, what the night's payload is."""
