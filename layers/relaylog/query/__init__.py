"""The query API: requests, stats, sessions, users, scores and prompt versions over either store."""
