"""Load and performance tests; not shipped with the product."""
