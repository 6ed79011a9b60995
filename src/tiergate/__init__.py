"""tiergate: a local-first hybrid LLM gateway for fleets of agents."""
