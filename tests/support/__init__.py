"""Test support: relaylog running on a real socket, and reading its records back."""
