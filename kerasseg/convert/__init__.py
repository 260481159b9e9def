"""Weight converters from other ecosystems (numpy state dicts; torch only where installed)."""
