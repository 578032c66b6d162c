"""Built-in stages, one a module; the registry discovers them by their ``@stage`` name."""
