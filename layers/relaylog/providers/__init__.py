"""Provider knowledge: where each provider lives and how to read its requests and responses."""
