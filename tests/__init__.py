"""batcher's test suite: a package, so its helpers import as `tests.helpers` under any import mode."""
