"""Gateway features asked for with Helicone headers: response cache, rate limits, retries, fallbacks.

Each has a policy read from the request's headers (pure parsing, no I/O) and, where state is
needed, a store with one local and one AWS implementation.
"""
