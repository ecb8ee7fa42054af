"""Development tools (test servers, fixtures); not used by the pipeline itself."""
