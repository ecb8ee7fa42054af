"""One module per DVC stage: read the stage's params, resolve paths (qmr.paths), call the core,
write outputs, metrics and plots. Each exposes ``run(params, **options)``; a stage never imports
another stage (tests/test_graph.py checks it, and that dvc.yaml declares each stage's imports)."""
