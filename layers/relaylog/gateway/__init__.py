"""Gateway features asked for with Helicone headers: response cache, rate limits, retries, fallbacks.

Each has a policy read from the request's headers (pure parsing, no I/O: the modules here) and,
where state is needed, a store: a package holding the interface with one implementation per place
the state lives beside it (`cache/`: files locally, DynamoDB and S3 on AWS; `counters/`: SQLite
locally, DynamoDB on AWS).
"""
