"""Local inference runtimes: an embedded llama.cpp server, its supervisor, and discovery."""
